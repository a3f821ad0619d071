"""Whole diffusers pipelines: which of their components `enable_parallelism(pipe, config)` parallelizes.

A pipeline (anything with diffusers' `components` mapping) is parallelized component by component: every
`nn.Module` among its components that has a plan — registered for its class or its own `_cp_plan` — which
covers `transformer`, Wan 2.2's `transformer_2` and the like. Text encoders, the VAE and the scheduler
have no plan and are left alone (they run replicated on every rank, as without cp_hooks).
"""

from __future__ import annotations

import torch.nn as nn

from cp_hooks.plans.registry import registered_plan


def is_pipeline(obj) -> bool:
    """True for a diffusers `DiffusionPipeline` (or anything with its `components` mapping of modules)."""
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "components", None), dict)


def parallel_components(pipe) -> list[tuple[str, nn.Module]]:
    """(name, module) of every component of `pipe` that has a context-parallel plan, in the pipeline's order."""
    return [
        (name, module)
        for name, module in pipe.components.items()
        if isinstance(module, nn.Module)
        and (registered_plan(type(module)) is not None or getattr(module, "_cp_plan", None))
    ]

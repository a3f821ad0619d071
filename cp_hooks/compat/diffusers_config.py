"""diffusers' own parallel-config objects, and diffusers' own context parallelism on a model.

`enable_parallelism` accepts diffusers' `ContextParallelConfig` and `ParallelConfig` as well as cp_hooks' own:
the fields have the same names and meanings, so they are copied into a cp_hooks config. A model on which
diffusers' context parallelism is already enabled is refused: its sequence would be split twice.
"""

from __future__ import annotations

import torch.nn as nn

from cp_hooks.config import ContextParallelConfig

_FIELDS = (
    "ring_degree",
    "ulysses_degree",
    "convert_to_fp32",
    "rotate_method",
    "ulysses_anything",
    "ring_anything",
    "mesh",
)


def as_cp_hooks_config(config) -> ContextParallelConfig:
    """cp_hooks' `ContextParallelConfig` for `config`: ours as is, diffusers' converted field by field.

    Raises:
        TypeError: another kind of object, or a diffusers `ParallelConfig` without a context-parallel config
            or with a tensor-parallel one (cp_hooks does context parallelism only).
    """
    if isinstance(config, ContextParallelConfig):
        return config
    kind = type(config).__name__
    if kind == "ParallelConfig" and hasattr(config, "context_parallel_config"):
        if getattr(config, "tensor_parallel_config", None) is not None:
            raise TypeError(
                "diffusers' ParallelConfig with a tensor_parallel_config: cp_hooks does context "
                "parallelism only; pass ParallelConfig(context_parallel_config=...) alone."
            )
        if config.context_parallel_config is None:
            raise TypeError(
                "diffusers' ParallelConfig has no context_parallel_config; pass "
                "ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=...))."
            )
        config = config.context_parallel_config
        kind = type(config).__name__
    if kind == "ContextParallelConfig" and all(hasattr(config, name) for name in ("ring_degree", "ulysses_degree")):
        return ContextParallelConfig(**{name: getattr(config, name) for name in _FIELDS if hasattr(config, name)})
    raise TypeError(
        f"config must be a ContextParallelConfig (cp_hooks' or diffusers') or diffusers' ParallelConfig, got {kind}. "
        "Build one with ContextParallelConfig(ring_degree=..., ulysses_degree=...)."
    )


def refuse_diffusers_parallelism(model: nn.Module) -> None:
    """Raise if diffusers' own context parallelism is enabled on `model` (its hooks would split the sequence too)."""
    if getattr(model, "_parallel_config", None) is not None:
        raise RuntimeError(
            f"diffusers' own parallelism is enabled on this {type(model).__name__} (model.enable_parallelism); "
            "cp_hooks would split its sequence a second time. Load the model again without it, then call "
            "cp_hooks.enable_parallelism."
        )

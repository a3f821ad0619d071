"""Attention processors of a plan's making (`ContextParallelProcessor`), swapped in from enable to disable.

Some processors cannot run on shards whatever the plan splits: they slice queries or keys at absolute positions
of the whole sequence, or write a cache by position. A plan then names a factory that builds a replacement
computing the same attention from this rank's shards. This hook swaps the replacements in after setup, checks
before every forward that they are still there (a `set_attn_processor` or an adapter since would silently bring
back the original's whole-sequence positions), and puts the originals back at disable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from cp_hooks.forward.hooks import ModelHook
from cp_hooks.runtime import ContextParallelRuntime


def _processor(module: nn.Module):
    return getattr(module, "processor", None)


def _set_processor(module: nn.Module, processor) -> None:
    # diffusers' set_processor also moves an nn.Module processor into _modules; plain modules take the attribute.
    set_processor = getattr(module, "set_processor", None)
    if set_processor is not None:
        set_processor(processor)
    else:
        module.processor = processor


class ProcessorSwap(ModelHook):
    """On the model: the plan's processors for the named attention modules (built before any collective)."""

    # Plain Python under torch.compile too: the check reads attributes a compiled graph would freeze.
    eager = True

    def __init__(self, entries: list[tuple[str, nn.Module, Callable[..., Any]]]) -> None:
        """`entries`: (module name, attention module, factory) for every module the plan gives a processor."""
        self.runtime: ContextParallelRuntime | None = None
        self.entries = entries
        for name, module, _ in entries:
            if _processor(module) is None:
                raise ValueError(
                    f"The plan gives '{name}' ({type(module).__name__}) a ContextParallelProcessor, but "
                    "it has no attention processor to replace."
                )
        self._installed: list[tuple[nn.Module, object, object]] = []  # (module, original, replacement)

    def install(self, runtime: ContextParallelRuntime) -> None:
        """Build and swap in the replacements (after the config's setup)."""
        self.runtime = runtime
        for _, module, factory in self.entries:
            original = _processor(module)
            replacement = factory(module, original, runtime)
            _set_processor(module, replacement)
            self._installed.append((module, original, replacement))

    def remove(self) -> None:
        """Put the original processors back (safe to call when `install` did not run, or ran partly)."""
        for module, original, _ in reversed(self._installed):
            _set_processor(module, original)
        self._installed = []

    def pre_forward(self, module, args, kwargs):
        for attention, _, replacement in self._installed:
            if _processor(attention) is not replacement:
                name = next(n for n, m, _ in self.entries if m is attention)
                raise ValueError(
                    f"The attention processor that cp_hooks' plan installed on '{name}' was replaced after "
                    f"enable_parallelism (now {type(_processor(attention)).__name__}); that model's own processor "
                    "cannot run on shards. Call disable_parallelism(model), change the processors, then "
                    "enable_parallelism(model, config) again."
                )
        return args, kwargs

"""Route diffusers attention processors to `context_parallel_attention`.

diffusers processors call `dispatch_attention_fn(..., parallel_config=self._parallel_config)` for attention
whose keys are sequence-parallel, and pass `parallel_config=None` for cross-attention with replicated keys
(e.g. Wan's text cross-attention). We set each processor's `_parallel_config` to a `CPHandle` and swap
`dispatch_attention_fn` in the processor's module for a wrapper that sends calls carrying a handle to
cp_hooks and everything else, unchanged and locally, to the original. The swap is reference-counted per
module and undone by `restore`.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch.nn as nn

from ..attention import routing
from ..attention.api import context_parallel_attention
from ..runtime import ContextParallelRuntime

_DISPATCH_NAME = "dispatch_attention_fn"
_patched_modules: dict[str, list] = {}  # module name -> [original function, reference count]
_MISSING = object()


@dataclass(frozen=True)
class CPHandle:
    """Stands in a processor's `_parallel_config`: marks its attention calls as context-parallel."""

    runtime: ContextParallelRuntime


def _repeat_kv_heads(query, key, value):
    # Grouped-query attention: give every query head its key/value head before splitting heads.
    if key.shape[2] != query.shape[2]:
        groups = query.shape[2] // key.shape[2]
        key, value = key.repeat_interleave(groups, dim=2), value.repeat_interleave(groups, dim=2)
    return key, value


def _make_wrapper(original):
    @functools.wraps(original)
    def dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False, attention_kwargs=None, *, backend=None, parallel_config=None):
        if isinstance(parallel_config, CPHandle) and routing.is_local():
            # A module the plan marks LocalAttention() (cross-attention over replicated keys, in a processor
            # that passes its parallel config for every call, e.g. SkyReels-V2): run it as diffusers would alone.
            parallel_config = None
        if isinstance(parallel_config, CPHandle):
            if enable_gqa:
                key, value = _repeat_kv_heads(query, key, value)
            return context_parallel_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                              config=parallel_config.runtime)
        with routing.run_locally():
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, attention_kwargs,
                            backend=backend, parallel_config=parallel_config)

    dispatch_attention_fn.__cp_hooks_original__ = original
    return dispatch_attention_fn


def _patch_module(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    if module is None or not callable(getattr(module, _DISPATCH_NAME, None)):
        return False
    if module_name in _patched_modules:
        _patched_modules[module_name][1] += 1
        return True
    original = getattr(module, _DISPATCH_NAME)
    setattr(module, _DISPATCH_NAME, _make_wrapper(original))
    _patched_modules[module_name] = [original, 1]
    return True


def _unpatch_module(module_name: str) -> None:
    entry = _patched_modules[module_name]
    entry[1] -= 1
    if entry[1] == 0:
        setattr(sys.modules[module_name], _DISPATCH_NAME, entry[0])
        del _patched_modules[module_name]


def attention_processors(model: nn.Module):
    """(name, processor) of every diffusers attention processor in `model` that takes a parallel config."""
    seen = set()
    for name, module in model.named_modules():
        processor = getattr(module, "processor", None)
        if processor is None or not hasattr(processor, "_parallel_config") or id(processor) in seen:
            continue
        seen.add(id(processor))
        yield name, processor


def all_dispatch_routed(model: nn.Module) -> bool:
    """True if `model` has attention processors and every one goes through `dispatch_attention_fn`.

    Then every attention call is routed here and the SDPA router (a torch-function mode that sees every
    torch call of the forward, at a few microseconds each) is not needed.
    """
    processors = [m.processor for m in model.modules() if getattr(m, "processor", None) is not None]
    return bool(processors) and all(
        hasattr(p, "_parallel_config") and callable(getattr(sys.modules.get(type(p).__module__), _DISPATCH_NAME, None))
        for p in processors
    )


def install(model: nn.Module, runtime: ContextParallelRuntime) -> list:
    """Mark every diffusers processor of `model` as context-parallel; returns what `restore` needs."""
    handle = CPHandle(runtime)
    undo = []
    for _, processor in attention_processors(model):
        previous = processor.__dict__.get("_parallel_config", _MISSING)
        module_name = type(processor).__module__
        patched = _patch_module(module_name)
        processor._parallel_config = handle
        undo.append((processor, previous, module_name if patched else None))
    return undo


def restore(undo: list) -> None:
    """Undo `install` exactly: processors' configs and the swapped dispatch functions."""
    for processor, previous, module_name in undo:
        if previous is _MISSING:
            del processor.__dict__["_parallel_config"]
        else:
            processor._parallel_config = previous
        if module_name is not None:
            _unpatch_module(module_name)

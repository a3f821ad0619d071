"""Route diffusers attention processors to `context_parallel_attention`.

diffusers processors call `dispatch_attention_fn(..., parallel_config=self._parallel_config)` for attention
whose keys are sequence-parallel, and pass `parallel_config=None` for cross-attention with replicated keys
(e.g. Wan's text cross-attention). We set each processor's `_parallel_config` to a `CPHandle` and swap
`dispatch_attention_fn` in the processor's module for a wrapper that sends calls carrying a handle to
cp_hooks and everything else, unchanged and locally, to the original. The swap is reference-counted per
module and undone by `ProcessorRouting.restore`.

A processor set after `enable_parallelism` (`set_attn_processor`, IP-adapter loading, `fuse_qkv_projections`)
would carry no handle and silently attend to its own shard only. `ProcessorRouting.sync`, called before every
forward of the model, routes any processor it has not seen yet (docs/architecture.md, "Attention routing"). The
same holds for attention modules added to the model after enable (an adapter that inserts layers, a block
appended to a ModuleList): torch's global module-registration hook counts registrations, and `sync` lists the
model's attention modules again when the count moved.
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn as nn

from cp_hooks.attention.api import context_parallel_attention
from cp_hooks.forward import context
from cp_hooks.runtime import ContextParallelRuntime

if TYPE_CHECKING:  # patches.py imports this module
    from cp_hooks.routing.patches import PatchLease

_DISPATCH_NAME = "dispatch_attention_fn"
_patched_modules: dict[str, list] = {}  # module name -> [original function, reference count]
_MISSING = object()

# What the context-parallel path reads, with the defaults diffusers gives them.
_ATTENTION_ARGS = {
    "query": _MISSING,
    "key": _MISSING,
    "value": _MISSING,
    "attn_mask": None,
    "dropout_p": 0.0,
    "is_causal": False,
    "scale": None,
    "enable_gqa": False,
}
# What it may ignore: the backend and its options choose a local kernel, and cp_hooks runs its own.
_IGNORED_ON_CP_PATH = frozenset({"attention_kwargs", "backend", "parallel_config"})


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


class _Arguments:
    """Where each argument of one dispatch function arrives: by keyword, or at its position.

    Read once from the original's signature, so that the wrapper forwards `*args, **kwargs` untouched and an
    argument a later diffusers adds passes through to the original.
    """

    def __init__(self, original) -> None:
        parameters = inspect.signature(original).parameters
        missing = [name for name in ("query", "key", "value", "parallel_config") if name not in parameters]
        if missing:
            raise TypeError(
                f"{getattr(original, '__module__', '?')}.{_DISPATCH_NAME} has no parameter(s) {', '.join(missing)}: "
                "this diffusers version routes attention differently from what cp_hooks knows. Please report it."
            )
        positional = [
            p.name
            for p in parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        self.positions = {name: i for i, name in enumerate(positional)}
        self.names = positional
        self.defaults = {name: p.default for name, p in parameters.items() if p.default is not p.empty}
        # Each attention argument's value when not passed: the original's default, else diffusers' usual one.
        self.fallback = {name: self.defaults.get(name, default) for name, default in _ATTENTION_ARGS.items()}
        # The fast path of `attention`: positional arguments in diffusers' order, keywords all known.
        order = list(_ATTENTION_ARGS)
        self.prefix = next(
            (i for i, name in enumerate(positional[: len(order)]) if name != order[i]), min(len(positional), len(order))
        )
        self.known = frozenset(_ATTENTION_ARGS) | _IGNORED_ON_CP_PATH
        # Per number of positional arguments: the (name, fallback) pairs of the attention arguments after them.
        self.rest = [[(name, self.fallback[name]) for name in order[n:]] for n in range(len(order) + 1)]

    def get(self, args: tuple, kwargs: dict, name: str, default=_MISSING):
        if name in kwargs:
            return kwargs[name]
        index = self.positions.get(name)
        if index is not None and index < len(args):
            return args[index]
        return self.defaults.get(name, default)

    def replace(self, args: tuple, kwargs: dict, name: str, value) -> tuple[tuple, dict]:
        index = self.positions.get(name)
        if name not in kwargs and index is not None and index < len(args):
            return args[:index] + (value,) + args[index + 1 :], kwargs
        return args, {**kwargs, name: value}

    def attention(self, args: tuple, kwargs: dict) -> list:
        """[query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa] of one call.

        Raises TypeError for an argument the context-parallel path would drop (one it does not know, passed
        with a value other than its default): identical on every rank, before the attention's first collective.
        """
        if len(args) <= self.prefix and kwargs.keys() <= self.known:  # how diffusers calls it: no lookups by name
            values = [*args, *[kwargs.get(name, fallback) for name, fallback in self.rest[len(args)]]]
        else:
            passed = dict(zip(self.names, args))
            passed.update(kwargs)
            dropped = [
                f"{name}={value!r}"
                for name, value in passed.items()
                if name not in self.known and not _is_default(value, self.defaults.get(name, _MISSING))
            ]
            if dropped or len(args) > len(self.names):
                raise TypeError(
                    f"{_DISPATCH_NAME} was called with {', '.join(dropped) or 'extra positional arguments'}, which "
                    "cp_hooks' context-parallel attention does not implement (an argument of a newer diffusers?). "
                    "Please report it; until then run this attention without context parallelism."
                )
            values = [self.get(args, kwargs, name, self.fallback[name]) for name in _ATTENTION_ARGS]
        if values[0] is _MISSING or values[1] is _MISSING or values[2] is _MISSING:
            raise TypeError(f"{_DISPATCH_NAME} needs query, key and value.")
        return values


def _is_default(value, default) -> bool:
    if value is default:
        return True
    # Equality only for plain values: a tensor compares element-wise.
    return type(value) in (bool, int, float, str) and type(value) is type(default) and value == default


def _make_wrapper(original):
    arguments = _Arguments(original)

    @functools.wraps(original)
    def dispatch_attention_fn(*args, **kwargs):
        parallel_config = kwargs.get("parallel_config", _MISSING)
        if parallel_config is _MISSING:
            parallel_config = arguments.get(args, kwargs, "parallel_config", None)
        if isinstance(parallel_config, CPHandle):
            if context.is_local():
                # A module the plan marks LocalAttention() (cross-attention over replicated keys, in a processor
                # that passes its parallel config for every call, e.g. SkyReels-V2): run it as diffusers would alone.
                args, kwargs = arguments.replace(args, kwargs, "parallel_config", None)
            else:
                q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa = arguments.attention(args, kwargs)
                if enable_gqa:
                    k, v = _repeat_kv_heads(q, k, v)
                return context_parallel_attention(
                    q, k, v, attn_mask, dropout_p, is_causal, scale, config=parallel_config.runtime
                )
        with context.run_locally():
            return original(*args, **kwargs)

    dispatch_attention_fn.__cp_hooks_original__ = original
    return dispatch_attention_fn


def _dispatch_module_name(processor) -> str:
    # The module whose globals the processor's __call__ reads `dispatch_attention_fn` from: a subclass
    # defined elsewhere still calls the one of the module that defines __call__.
    call = getattr(type(processor), "__call__", None)  # noqa: B004 (its __module__ is wanted, not callability)
    return getattr(call, "__module__", None) or type(processor).__module__


def patch_module(module_name: str) -> bool:
    """Swap `dispatch_attention_fn` of `module_name` for the routing wrapper (reference-counted); False where
    the module has none."""
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


def unpatch_module(module_name: str) -> None:
    """Ends one `patch_module(module_name)`; the last one puts diffusers' function back."""
    entry = _patched_modules[module_name]
    entry[1] -= 1
    if entry[1] == 0:
        setattr(sys.modules[module_name], _DISPATCH_NAME, entry[0])
        del _patched_modules[module_name]


class ProcessorRouting:
    """Keeps every attention processor of one model marked as context-parallel, from enable to disable.

    Built before any collective (it only lists the model's attention modules); `install` marks the current
    processors, `sync` (before each forward) marks any processor set since, and `restore` undoes all of it.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._undo: dict = {}  # id(processor) -> (processor, previous _parallel_config, patched module or None)
        self._handle: CPHandle | None = None
        self._lease: PatchLease | None = None
        self._list_modules()

    def _list_modules(self) -> None:
        # Attention modules are listed again only when a module was registered somewhere since: processors
        # change often (set_attn_processor), modules rarely. Their __dict__s are kept so that a steady forward
        # compares processors without attribute lookups.
        self._registrations = context.registration_count()
        self.modules = list(self._model.modules())
        self._dicts = [m.__dict__ for m in self.modules if getattr(m, "processor", None) is not None]
        self._seen: list = [None] * len(self._dicts)  # the processor each module had at the last sync

    @property
    def processors(self) -> list:
        """The processors the model's attention modules hold now."""
        # A processor that is an nn.Module lives in the module's _modules, every other one in its __dict__.
        return [d.get("processor") or d["_modules"].get("processor") for d in self._dicts]

    def install(self, runtime: ContextParallelRuntime, lease: PatchLease) -> None:
        """Mark the current processors; their modules' dispatch functions are patched under `lease` (the
        model's `PatchLease`, which releases them)."""
        self._handle = CPHandle(runtime)
        self._lease = lease
        self.sync()

    def sync(self) -> bool:
        """Route processors set since the last call; True if any module's processor changed.

        When nothing changed: one integer and one list compared (a few microseconds for Flux's 57 modules).
        """
        if (
            context.registration_count() != self._registrations
        ):  # a module was added somewhere: maybe an attention module
            self._list_modules()
        current = self.processors
        if current == self._seen:  # list equality tests identity first; processors compare by identity
            return False
        for processor in current:
            if processor is not None and id(processor) not in self._undo and hasattr(processor, "_parallel_config"):
                self._route(processor)
        self._seen = current
        return True

    def _route(self, processor) -> None:
        previous = processor.__dict__.get("_parallel_config", _MISSING)
        assert self._lease is not None  # install() sets it before its first sync
        self._lease.patch_dispatch(_dispatch_module_name(processor))
        processor._parallel_config = self._handle
        # The undo entry holds the processor, so its id stays unique while it is recorded.
        self._undo[id(processor)] = (processor, previous)

    def restore(self) -> None:
        """Undo every mark exactly: processors' configs (the dispatch functions are the lease's to put back)."""
        for processor, previous in reversed(list(self._undo.values())):
            if previous is _MISSING:
                processor.__dict__.pop("_parallel_config", None)
            else:
                processor._parallel_config = previous
        self._undo.clear()
        self._seen = [None] * len(self._dicts)

"""Sequential classifier-free guidance over two cfg groups: the two calls of a step run at the same time.

Pipelines such as Wan, QwenImage, CogView4 and Flux with `true_cfg_scale` call the transformer twice per
denoising step, inside `model.cache_context("cond")` and then `model.cache_context("uncond")`, with a batch of
one; pipelines that run diffusers' ClassifierFreeGuidance guider (HunyuanVideo 1.5) label the same two calls
"pred_cond" and "pred_uncond". With `cfg_degree=2` (docs/architecture.md, "Batch groups"):

1. **Learning (the first step).** Both calls run normally, each cfg group computing the same call with
   context parallelism inside it. The keyword arguments that differ between the two calls are recorded
   (e.g. `encoder_hidden_states`: the prompt's embeddings, then the negative prompt's): the substitutions.
2. **Every later step, the "cond" call.** Group 0 computes it; group 1 computes the unconditional call it
   predicts — these arguments with the substitutions applied — at the same time. One all-gather over the
   cfg group gives every rank both outputs; the conditional one is returned, the other kept.
3. **The "uncond" call.** If its arguments equal the prediction (every tensor the same object at the same
   version, or equal values; every other value equal), the kept output is returned without computing.
   Otherwise the prediction was wrong: the call is computed normally, a warning says so, and the next
   step learns again. So a rank never returns an output computed from other inputs than the call's.

Arguments are snapshotted when a call is made (containers copied, tensors referenced with their version
counter), so a pipeline that mutates a dict or a tensor in place between the two calls is seen to differ.
Only inference (no autograd) and keyword-argument calls take part; anything else runs normally, and so does a
call that `torch.compile(model)` traces (compile the repeated blocks instead: `compile_repeated_blocks`). The calls
are found by the labels of `cache_context`, which cp_hooks wraps on the model while it is enabled; the
model's class is swapped for a subclass whose `__call__` can return the kept output without running
`forward` (module hooks cannot skip a forward). Both are undone by `disable_parallelism`.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn

from cp_hooks.forward.context import paired_call
from cp_hooks.forward.tree import map_tensors
from cp_hooks.runtime import ContextParallelRuntime

_STATE_ATTR = "_cp_hooks_sequential_cfg"
# cache_context labels of the two calls of a step -> their role: the pipelines' own, and those of diffusers'
# guiders (ClassifierFreeGuidance names its predictions "pred_cond" / "pred_uncond": HunyuanVideo 1.5).
_LABELS = {"cond": "cond", "uncond": "uncond", "pred_cond": "cond", "pred_uncond": "uncond"}
_SUBCLASSES: dict[type, type] = {}


class _Snapshot:
    """The value of a call's arguments at call time: containers copied, tensors with their version."""

    def __init__(self, value) -> None:
        self.value = _freeze(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Snapshot) and _same(self.value, other.value)


def _freeze(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", value, value._version)
    if isinstance(value, dict):
        return ("dict", {k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_freeze(v) for v in value])
    return ("value", value)


def _same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "tensor":
        (_, x, vx), (_, y, vy) = a, b
        if x is y and vx == vy:
            return True
        return x.shape == y.shape and x.dtype == y.dtype and x.device == y.device and bool(torch.equal(x, y))
    if a[0] == "dict":
        return a[1].keys() == b[1].keys() and all(_same(a[1][k], b[1][k]) for k in a[1])
    if a[0] == "value":
        try:
            return bool(a[1] == b[1]) or a[1] is b[1]
        except Exception:  # noqa: BLE001  (an object without a usable ==)
            return a[1] is b[1]
    return len(a[1]) == len(b[1]) and all(_same(x, y) for x, y in zip(a[1], b[1]))


class SequentialCfg:
    """The paired-call state of one enabled model (see the module docstring)."""

    def __init__(self, model: nn.Module, runtime: ContextParallelRuntime) -> None:
        self.runtime = runtime
        self.label: str | None = None
        self.original_class = type(model)
        self.cond: tuple[dict, _Snapshot] | None = None  # the last "cond" call's kwargs and snapshot
        self.substitutions: dict | None = None  # argument name -> the unconditional call's value
        self.pending: tuple[_Snapshot, object] | None = None  # predicted "uncond" arguments, its output
        self.warned = False
        self.defaults = _keyword_defaults(self.original_class.forward)

    # ---------------------------------------------------------------------------------------- install
    def install(self, model: nn.Module) -> None:
        original = model.cache_context  # bound method of diffusers' CacheMixin

        @contextlib.contextmanager
        def cache_context(name, *args, **kwargs):
            previous, self.label = self.label, name
            try:
                with original(name, *args, **kwargs):
                    yield
            finally:
                self.label = previous

        object.__setattr__(model, "cache_context", cache_context)
        object.__setattr__(model, _STATE_ATTR, self)
        model.__class__ = _paired_subclass(self.original_class)

    def remove(self, model: nn.Module) -> None:
        model.__class__ = self.original_class
        model.__dict__.pop("cache_context", None)
        model.__dict__.pop(_STATE_ATTR, None)

    # ---------------------------------------------------------------------------------------- calls
    def call(self, model: nn.Module, args: tuple, kwargs: dict):
        plain = self.original_class.__call__
        label = self.label
        if args or label not in _LABELS or torch.is_grad_enabled():
            return plain(model, *args, **kwargs)
        label = _LABELS[label]
        # An argument left out is its default: a pipeline may pass `guidance=None` to one call and leave it out
        # of the other (LongCat-Image), which must not read as a difference.
        kwargs = {**self.defaults, **kwargs}
        if label == "cond":
            return self._cond(model, plain, kwargs)
        return self._uncond(model, plain, kwargs)

    def _cond(self, model, plain, kwargs):
        self.pending = None
        if self.substitutions is None:  # still learning: both groups compute this call
            self.cond = (kwargs, _Snapshot(kwargs))
            with paired_call():
                return plain(model, **kwargs)
        predicted = {**kwargs, **self.substitutions}
        mine = kwargs if self.runtime.cfg_rank == 0 else predicted
        with paired_call(predicted=True):
            output = plain(model, **mine)
        cond_output, uncond_output = _exchange(output, self.runtime)
        self.pending = (_Snapshot(predicted), uncond_output)
        return cond_output

    def _uncond(self, model, plain, kwargs):
        pending, self.pending = self.pending, None
        if pending is not None and pending[0] == _Snapshot(kwargs):
            return pending[1]
        if pending is not None:  # the pipeline changed more than the substitutions: compute, learn again
            if not self.warned:
                warnings.warn(
                    f"cp_hooks cfg_degree=2: the unconditional call of {type(model).__name__} did not match the one "
                    "predicted from the conditional call, so it was computed again (correct, but without the "
                    "speed-up for this step); the next step learns the difference again.",
                    RuntimeWarning,
                    stacklevel=1,
                )
                self.warned = True
            self.substitutions = None
        elif self.substitutions is None and self.cond is not None:
            self.substitutions = _differences(self.cond[1], kwargs)
            if self.substitutions is None and not self.warned:
                keys = sorted(set(self.cond[0]) ^ set(kwargs))
                warnings.warn(
                    f"cp_hooks cfg_degree=2: the conditional and unconditional calls of {type(model).__name__} take "
                    f"different arguments ({', '.join(keys)} in one only), so they are not paired: both groups "
                    "compute both calls (correct, without the speed-up).",
                    RuntimeWarning,
                    stacklevel=1,
                )
                self.warned = True
        self.cond = None
        with paired_call():
            return plain(model, **kwargs)


def _keyword_defaults(forward) -> dict:
    """The defaults of `forward`'s parameters that can be passed by keyword."""
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in parameters if p.kind in kinds and p.default is not inspect.Parameter.empty}


def _differences(cond: _Snapshot, uncond: dict) -> dict | None:
    """The arguments of `uncond` that differ from the conditional call's; None when the keys differ."""
    after = _Snapshot(uncond).value[1]
    before = cond.value[1]
    if before.keys() != after.keys():
        return None
    return {k: uncond[k] for k in uncond if not _same(before[k], after[k])}


def _exchange(output, runtime: ContextParallelRuntime):
    """(group 0's output, group 1's output) on every rank: one all-gather per tensor over the cfg group."""
    parts: list[list[torch.Tensor]] = [[], []]

    def gather(t: torch.Tensor) -> torch.Tensor:
        pieces = [torch.empty_like(t) for _ in range(2)]
        dist.all_gather(pieces, t.contiguous(), group=runtime.cfg_group)
        parts[0].append(pieces[0])
        parts[1].append(pieces[1])
        return t

    map_tensors(output, gather)

    def rebuild(pieces: list[torch.Tensor]):
        it = iter(pieces)
        return map_tensors(_copy_structure(output), lambda t: next(it))

    return rebuild(parts[0]), rebuild(parts[1])


def _copy_structure(value):
    if isinstance(value, dict):
        copy = type(value).__new__(type(value))
        dict.update(copy, value)
        copy.__dict__.update(getattr(value, "__dict__", {}))
        return copy
    if isinstance(value, list):
        return list(value)
    return value  # tensors and tuples are rebuilt by map_tensors


def _dynamo_active() -> bool:
    """Whether torch.compile's frame evaluation is on here (a skipped frame under a compiled call).

    Reads dynamo's current callback (a private torch API, present since torch 2.0); where it is missing, False.
    """
    try:
        from torch._C._dynamo.eval_frame import get_eval_frame_callback
    except ImportError:  # pragma: no cover - other torch builds
        return False
    return get_eval_frame_callback() not in (None, False)


def _paired_subclass(cls: type) -> type:
    if cls not in _SUBCLASSES:

        def __call__(self, *args, **kwargs):
            state = self.__dict__.get(_STATE_ATTR)
            # Under torch.compile(model) (or inlined into a caller's graph): a plain call, since the pairing
            # compares tensors, which a graph cannot branch on; compile_repeated_blocks keeps the pairing
            # (docs/architecture.md, "Batch groups").
            if state is None or torch.compiler.is_compiling() or _dynamo_active():
                return cls.__call__(self, *args, **kwargs)
            return state.call(self, args, kwargs)

        # torch.compile(model) starts at the model's __call__: skip this frame only (recursive=False), so that
        # dynamo picks up the frames below it as for any module, the model's own hooks as frames of their own
        # and its forward as one graph. Tracing this frame would inline nn.Module.__call__ with the model's
        # hooks, and the eager (compiler-disabled) ones would break the graph.
        __call__ = torch.compiler.disable(__call__, recursive=False)

        _SUBCLASSES[cls] = type(
            cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        )
    return _SUBCLASSES[cls]


def supports_sequential(model: nn.Module) -> bool:
    """True when `model` has diffusers' `cache_context` (the labels the pairing reads)."""
    return callable(getattr(type(model), "cache_context", None))

"""Route `torch.nn.functional.scaled_dot_product_attention` calls made inside a parallelized model.

Every SDPA call that a module of an enabled model makes during its forward (or, for blocks recomputed by
activation checkpointing, during its backward) is treated as self-attention over sequence-sharded tensors,
except inside modules the plan marks `LocalAttention()`, inside diffusers' dispatch (routed by
`diffusers_dispatch`) and inside cp_hooks' own kernels. A module that is not part of the enabled model is
never routed, whatever calls it (`cp_hooks.forward.context.attention_runtime`; docs/architecture.md,
"Attention routing").

Patches (each taken by an enabled model and released by its disable, or when it is garbage-collected:
`routing/patches.py`):

* The SDPA guard, for every enabled model: while any model is enabled, the attribute
  `F.scaled_dot_product_attention` is a thin function that routes when the forward context says so and
  otherwise calls what it replaced. One Python call per SDPA call and nothing per other
  torch call; it sees every caller that looks the function up on `torch.nn.functional` (diffusers,
  transformers, and nearly all model code). dynamo traces it like any Python function and guards on the
  attribute (installed at enable, never swapped inside a forward).
* The SDPA router, in addition, where the guard may not see every call: a torch-function mode active during
  the forward, which also sees calls through a name bound to torch's SDPA itself (`from torch.nn.functional
  import scaled_dot_product_attention`), but costs a few microseconds on every torch call of the forward.
  Used for models whose attention is not all routed by diffusers' dispatch (as before the guard existed)
  and for models whose code binds SDPA under its own name (`sdpa_bound_elsewhere`).

Under torch.compile the mode is traced with the forward, and dynamo cannot trace some of what it then sees
(e.g. `Tensor.unflatten`'s `super()` call): such models fail loudly with `fullgraph=True`
(docs/architecture.md, "Compile boundary").
"""

from __future__ import annotations

import functools
import sys
import threading

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from cp_hooks.attention.api import context_parallel_attention
from cp_hooks.forward import context
from cp_hooks.forward.hooks import ModelHook

# torch's own SDPA, also when this module is imported while another copy's guard is installed.
_SDPA = getattr(F.scaled_dot_product_attention, "__cp_hooks_original__", F.scaled_dot_product_attention)


class SDPARouter(TorchFunctionMode):
    """Sends SDPA calls to `context_parallel_attention` (layout (B, H, S, D) in and out, as SDPA)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Under torch.compile dynamo hands the mode the function that F.scaled_dot_product_attention names now:
        # the guard, while one is installed.
        if func is not _SDPA and getattr(func, "__cp_hooks_original__", None) is not _SDPA:
            return func(*args, **kwargs)
        runtime = context.attention_runtime()
        if runtime is None:
            return func(*args, **kwargs)
        return _route(runtime, *args, **kwargs)


def _route(runtime, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    if enable_gqa and k.shape[2] != q.shape[2]:
        groups = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
    out = context_parallel_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, config=runtime)
    return out.transpose(1, 2)


_guard_lock = threading.Lock()
_guard_users = 0
_guard = None  # the installed guard
_replaced = None  # what F.scaled_dot_product_attention was before the guard


def _make_guard(replaced):
    @functools.wraps(_SDPA)
    def scaled_dot_product_attention(*args, **kwargs):
        runtime = context.attention_runtime()
        if runtime is not None:
            return _route(runtime, *args, **kwargs)
        return replaced(*args, **kwargs)

    scaled_dot_product_attention.__cp_hooks_original__ = _SDPA
    return scaled_dot_product_attention


def acquire_guard() -> None:
    """Install the SDPA guard on `torch.nn.functional` (reference-counted: one per enabled model)."""
    global _guard_users, _guard, _replaced
    with _guard_lock:
        if _guard_users == 0:
            _replaced = F.scaled_dot_product_attention
            _guard = _make_guard(_replaced)
            F.scaled_dot_product_attention = _guard
        _guard_users += 1


def release_guard() -> None:
    """Ends one `acquire_guard()`; the last one puts back what the guard replaced."""
    global _guard_users, _guard, _replaced
    with _guard_lock:
        _guard_users -= 1
        if _guard_users == 0:
            # Only our own guard is put back: a wrapper installed over it since still calls it, and the guard
            # then calls what it replaced (it routes only inside a guarded forward).
            if _replaced is not None and F.scaled_dot_product_attention is _guard:
                F.scaled_dot_product_attention = _replaced
            _guard = _replaced = None


def guard_installed() -> bool:
    """True while at least one model holds the SDPA guard."""
    return _guard_users > 0


def sdpa_bound_elsewhere(objects) -> str | None:
    """Where the code of `objects` holds torch's SDPA under its own name, or None.

    Looks at the globals of the Python modules that define the objects' classes (and their bases) and at the
    class attributes: a name bound there (`from torch.nn.functional import scaled_dot_product_attention`)
    bypasses the guard, so such a model needs the router.
    """
    classes, modules = set(), {F, sys.modules[__name__]}
    for cls in {type(o) for o in objects}:
        for klass in cls.__mro__:
            if klass in classes:
                continue
            classes.add(klass)
            module = sys.modules.get(klass.__module__)
            if module is not None and module not in modules:
                modules.add(module)
                for name, value in list(vars(module).items()):
                    if value is _SDPA:
                        return f"{klass.__module__}.{name}"
            for name, value in vars(klass).items():
                if value is _SDPA or getattr(value, "__func__", None) is _SDPA:
                    return f"{klass.__module__}.{klass.__qualname__}.{name}"
    return None


class LocalAttentionHook(ModelHook):
    """Runs the module's attention calls locally (replicated keys: no communication)."""

    def enter(self, module) -> None:
        context.enter_local()

    def exit(self, module) -> None:
        context.exit_local()

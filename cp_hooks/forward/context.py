"""The forward context: everything "current" about the enabled forwards running on this thread, in one place.

One thread-local object holds it all (docs/architecture.md, "Forward context"):

* `forwards`: the `ModelContext` of every enabled model whose forward is running on this thread, innermost
  last. `ForwardContextHook`, the first hook on an enabled model, pushes and pops it — also when the forward
  raises. Attention routing (`routing/`), the cache metrics (`compat/caches.py`) and the value checks read it.
* `local_depth`: attention calls from here are local (a module the plan marks `LocalAttention`, diffusers'
  own local path, cp_hooks' own kernels).
* `paired_depth` / `paired_predicted`: one call of a sequential-guidance pair is running (`compat/sequential_cfg.py`),
  and whether the cfg groups compute different calls in it.
* `checks`: the value-check records of the enabled forwards in progress (`forward/value_checks.py`).

Every attribute is set in `__init__`, in every thread, before any use: a compiled graph guards on them, and
an attribute that appeared only after the first call would recompile the graph. A `ModelContext` is one
object per enabling, pushed again by every forward, so a compiled graph that reads it guards on a stable
identity.

**Which calls are routed.** An SDPA call is context-parallel only when the module that makes it belongs to the
enabled model (`ModelContext.owns_caller`): the innermost `nn.Module` call on the Python stack is one of the
model's modules. A module of another model — a text encoder called from a hook during the forward, a second
model recomputed by activation checkpointing in the same backward, anything on another thread — runs its
attention as it would without cp_hooks. The check walks a few Python frames per SDPA call in eager mode; under
torch.compile it is decided when the graph is traced (only the model's own code is traced into its graph).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from types import FrameType

import torch
import torch.nn as nn
from torch.nn.modules.module import register_module_module_registration_hook

from cp_hooks.forward.hooks import ModelHook
from cp_hooks.forward.tree import iter_tensors

# The frames of `nn.Module.__call__`: the innermost one on the stack names the module that is running.
_MODULE_CALL_CODES = frozenset({nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__})

_registrations = [0]  # submodules registered anywhere since the hook below was added
_registration_handle = None


def _count_registration(module, name, submodule):
    _registrations[0] += 1


def registration_count() -> int:
    """Module registrations anywhere in the process so far: a cheap test of "was any module added since"."""
    global _registration_handle
    if _registration_handle is None:
        _registration_handle = register_module_module_registration_hook(_count_registration)
    return _registrations[0]


class ModelContext:
    """One enabled model, as the forwards on any thread see it: its runtime and which modules are its own.

    Built by `enable_parallelism`, one per enabling; holds the model only weakly (a model dropped without
    `disable_parallelism` is collected, and its patches released: `routing/patches.py`).
    """

    def __init__(self, model: nn.Module, runtime) -> None:
        self.runtime = runtime
        self.model_ref = weakref.ref(model)
        self._members: weakref.WeakSet = weakref.WeakSet()
        self._registrations = -1
        self.refresh_members()

    def refresh_members(self) -> None:
        """List the model's modules again when a module was registered anywhere since the last look."""
        count = registration_count()
        if count == self._registrations:
            return
        model = self.model_ref()
        self._members = weakref.WeakSet(model.modules()) if model is not None else weakref.WeakSet()
        self._registrations = count

    def owns(self, module) -> bool:
        """True when `module` is the model or one of its submodules (as the model is now)."""
        if module is None:
            return False
        self.refresh_members()
        return module in self._members

    def owns_caller(self) -> bool:
        """True when the innermost module call on this thread's Python stack belongs to the model."""
        return self.owns(innermost_module())


def innermost_module(skip: int = 2):
    """The `nn.Module` whose call is innermost on this thread's Python stack, or None outside any module."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        if frame.f_code in _MODULE_CALL_CODES:
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.forwards: list[ModelContext] = []
        self.local_depth = 0
        self.paired_depth = 0
        self.paired_predicted = 0
        self.checks: list = []


_state = _ThreadState()
# The contexts of enabled models whose backward pass is running, on any thread: the autograd engine may run a
# backward's nodes on device threads. Activation checkpointing recomputes blocks there, outside the forward.
_backward: list[ModelContext] = []


def state() -> _ThreadState:
    """This thread's forward context."""
    return _state


def current() -> ModelContext | None:
    """The innermost enabled model whose forward is running on this thread, or None."""
    forwards = _state.forwards
    return forwards[-1] if forwards else None


def current_runtime():
    """The runtime of `current()`, or None."""
    forwards = _state.forwards
    return forwards[-1].runtime if forwards else None


def push(context: ModelContext) -> None:
    """An enabled model's forward starts on this thread."""
    _state.forwards.append(context)


def pop(context: ModelContext) -> None:
    """Ends one `push(context)` (the innermost one)."""
    forwards = _state.forwards
    if forwards and forwards[-1] is context:
        forwards.pop()


def attention_runtime():
    """The runtime an attention call made here is context-parallel with, or None to run it locally.

    Local inside `run_locally()`. In an enabled forward on this thread: that model's runtime, when the calling
    module is the model's own (eager; a compiled graph holds only the model's own code). During an enabled
    model's backward: that model's runtime, when the calling module (a block recomputed by activation
    checkpointing) is the model's own.
    """
    if _state.local_depth:
        return None
    forwards = _state.forwards
    if forwards:
        context = forwards[-1]
        if torch.compiler.is_compiling() or context.owns_caller():
            return context.runtime
        return None
    if _backward and not torch.compiler.is_compiling():
        module = innermost_module()
        for context in reversed(_backward):
            if context.owns(module):
                return context.runtime
    return None


def route_during_backward(context: ModelContext) -> None:
    """Route the model's own attention calls until the running backward pass ends (call it from inside one).

    A checkpointed block (`torch.utils.checkpoint`, diffusers' gradient checkpointing) recomputes its forward
    during the backward, after the model's forward has returned; without this its attention would attend to
    the local shard only (non-reentrant checkpoints then fail their recomputation check, reentrant ones give
    wrong gradients). Only modules of this model are routed (`attention_runtime`).
    """
    _backward.append(context)
    torch.autograd.Variable._execution_engine.queue_callback(lambda: _backward.remove(context))


def enter_local() -> None:
    """Attention calls from here to `exit_local()` run locally (a module marked LocalAttention)."""
    _state.local_depth += 1


def exit_local() -> None:
    """Ends one `enter_local()`."""
    _state.local_depth -= 1


@contextlib.contextmanager
def run_locally():
    """Attention calls inside this block run locally (cp_hooks' own kernels, diffusers' local path)."""
    _state.local_depth += 1
    try:
        yield
    finally:
        _state.local_depth -= 1


inside_cp_kernel = run_locally


def is_local() -> bool:
    """True inside `run_locally()` / between `enter_local()` and `exit_local()`."""
    return _state.local_depth > 0


@contextlib.contextmanager
def paired_call(predicted: bool = False):
    """Inside: one call of a sequential-guidance pair (`compat/sequential_cfg.py`); the batch is not split.

    `predicted`: the cfg groups compute different calls (group 0 the conditional one, group 1 the predicted
    unconditional one), whose inputs may differ in shape (an unpadded negative prompt).
    """
    _state.paired_depth += 1
    _state.paired_predicted += int(predicted)
    try:
        yield
    finally:
        _state.paired_depth -= 1
        _state.paired_predicted -= int(predicted)


def in_paired_call() -> bool:
    """True inside `paired_call()`: each cfg group runs a whole call, the batch is not split."""
    return _state.paired_depth > 0


def groups_compute_different_calls() -> bool:
    """True inside a predicted pair: only the ranks of one cfg group share the call's inputs."""
    return _state.paired_predicted > 0


class ForwardContextHook(ModelHook):
    """The first hook on an enabled model: its forward context is current on this thread while it runs, and
    the backward of its outputs routes the model's own recomputed attention (`route_during_backward`)."""

    # Plain Python also under torch.compile (outside the graph): the push and pop are the model's call itself.
    eager = True

    def __init__(self, context: ModelContext) -> None:
        self.context = context

    def enter(self, module) -> None:
        push(self.context)

    def exit(self, module) -> None:  # also when the forward raises (always_call)
        pop(self.context)

    def post_forward(self, module, output):
        if torch.is_grad_enabled():
            _route_when_backward_starts(output, self.context)
        return output


def _route_when_backward_starts(output, model_context: ModelContext) -> None:
    """The first output gradient computed starts the backward scope of this forward; the end of that backward
    pass ends it."""
    started = [False]

    def start(grad):
        if not started[0]:
            started[0] = True
            route_during_backward(model_context)
            torch.autograd.Variable._execution_engine.queue_callback(lambda: started.__setitem__(0, False))
        return grad

    for tensor in iter_tensors(output):
        if tensor.requires_grad:
            tensor.register_hook(start)

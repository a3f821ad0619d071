"""A small hook registry for `nn.Module`s: named, ordered, removable — on torch's own module hooks.

cp_hooks never replaces a module's `forward`. Each hook is installed with `register_forward_pre_hook` and
`register_forward_hook` (with kwargs), which torch runs in `Module.__call__` around whatever `forward` is
at that moment. That is why cp_hooks composes with libraries that do replace `forward` (diffusers'
`HookRegistry`: caches, offloading, layerwise casting; accelerate's hooks), in any order of adding and
removing: removing a cp_hooks hook removes its handles and touches nothing else, and removing another
library's wrapper never drops a cp_hooks hook. It is also what `torch.compile` traces without a graph
break (docs/architecture.md, "Hooks").

Order on one module: `pre_forward` in registration order, `post_forward` in reverse order (the first hook
added sees the final output). Consecutive hooks that are all eager or all traced share one pair of torch
hooks, re-registered when a cp_hooks hook is added or removed (so they then come after torch hooks that other
code registered on that module meanwhile). A hook's `enter()` runs after its `pre_forward` and its `exit()`
before its `post_forward` — also when the forward raises (torch's `always_call`), so the module stays usable.

A module with cp_hooks hooks refuses `copy.deepcopy`: the copy would carry hooks bound to the original's
process groups. Disable first, copy, then enable each.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, overload

import torch
import torch.nn as nn

_REGISTRY_ATTR = "_cp_hook_registry"
_DEEPCOPY_ATTR = "__deepcopy__"


class ModelHook:
    """Base class of a hook. Override any of the three methods; each default does nothing.

    A hook with `eager = True` is never traced by torch.compile: its calls run as plain Python also when the
    model is compiled (torch.compile(model), model.compile()). For work that must see the model as it is at
    each call (attributes changed since the last one), which a compiled graph would freeze.
    """

    eager = False

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Return the (possibly changed) positional and keyword arguments of the forward."""
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        """Return the (possibly changed) output of the forward."""
        return output

    def enter(self, module: nn.Module) -> None:
        """Called after `pre_forward`, before the forward runs."""

    def exit(self, module: nn.Module) -> None:
        """Called after the forward, before `post_forward` — also when the forward raises."""


class _Entry:
    """One `ModelHook` on a module, with the forwards whose `enter` ran and whose `exit` has not: torch runs an
    always_call hook also when an earlier pre-hook raised, before this hook's `enter`, and that `exit` must not
    run."""

    def __init__(self, hook: ModelHook) -> None:
        self.hook = hook
        self.entered = 0

    def pre(self, module, args, kwargs):
        args, kwargs = self.hook.pre_forward(module, args, kwargs)
        # enter/exit are plain calls, not a context-manager object kept between the two hooks: dynamo
        # traces calls, but cannot carry a generator-based context manager from one hook's frame to another.
        self.hook.enter(module)
        self.entered += 1
        return args, kwargs

    def post(self, module, output):
        if self.entered:
            self.entered -= 1
            self.hook.exit(module)
        if output is None:  # the forward raised (an always_call hook): only `exit` had to run
            return None
        return self.hook.post_forward(module, output)


class _Segment:
    """Consecutive hooks of one module, all eager or all traced, run by one pair of torch hooks.

    One pair per run of hooks rather than per hook: where torch.compile meets a module's hooks as frames of
    their own (the top-level module of `torch.compile(model)`), each pair is one more compile of the same hook
    code, and dynamo's recompile limit (8 per code object) counts them.
    """

    def __init__(self, module: nn.Module, entries: list[_Entry], eager: bool) -> None:
        self.entries = entries
        has_context = any(type(e.hook).exit is not ModelHook.exit for e in entries)
        pre, post = self._pre, self._post
        if eager:
            # Hooks on a compiled model are called from nn.Module.__call__, outside the forward's graph: a
            # disabled one runs eagerly there, without a graph break in the forward.
            pre, post = torch.compiler.disable(pre), torch.compiler.disable(post)
        self.handles = [
            module.register_forward_pre_hook(pre, with_kwargs=True),
            # prepend: forward hooks run in registration order, ours must run in reverse.
            module.register_forward_hook(post, with_kwargs=True, prepend=True, always_call=has_context),
        ]

    def _pre(self, module, args, kwargs):
        for entry in self.entries:
            args, kwargs = entry.pre(module, args, kwargs)
        return args, kwargs

    def _post(self, module, args, kwargs, output):
        for entry in reversed(self.entries):
            output = entry.post(module, output)
        return output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class HookRegistry:
    """The ordered, named cp_hooks hooks of one module. Get it with `HookRegistry.of(module)`."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._hooks: OrderedDict[str, _Entry] = OrderedDict()
        self._segments: list[_Segment] = []

    @overload
    @classmethod
    def of(cls, module: nn.Module, create: Literal[True] = True) -> HookRegistry: ...

    @overload
    @classmethod
    def of(cls, module: nn.Module, create: bool) -> HookRegistry | None: ...

    @classmethod
    def of(cls, module: nn.Module, create: bool = True) -> HookRegistry | None:
        """The registry of `module`, created on first use when `create` is true."""
        registry = module.__dict__.get(_REGISTRY_ATTR)
        if registry is None and create:
            registry = cls(module)
            # object.__setattr__: nn.Module.__setattr__ would try to register it as a submodule/buffer.
            object.__setattr__(module, _REGISTRY_ATTR, registry)
            if _DEEPCOPY_ATTR not in module.__dict__:
                object.__setattr__(module, _DEEPCOPY_ATTR, _refuse_deepcopy(module))
        return registry

    @property
    def names(self) -> list[str]:
        """Hook names in the order their `pre_forward` runs."""
        return list(self._hooks)

    def get(self, name: str) -> ModelHook | None:
        """The hook registered under `name`, or None."""
        entry = self._hooks.get(name)
        return None if entry is None else entry.hook

    def add(self, name: str, hook: ModelHook) -> None:
        """Append `hook` under `name`. Raises ValueError if the name is taken."""
        if name in self._hooks:
            raise ValueError(f"A hook named {name!r} is already registered on {type(self._module).__name__}.")
        self._hooks[name] = _Entry(hook)
        self._reinstall()

    def remove(self, name: str) -> ModelHook:
        """Remove and return the hook `name`; after the last one the module is exactly as before."""
        entry = self._hooks.pop(name)
        self._reinstall()
        if not self._hooks:
            del self._module.__dict__[_REGISTRY_ATTR]
            if getattr(self._module.__dict__.get(_DEEPCOPY_ATTR), "_cp_hooks_refusal", False):
                del self._module.__dict__[_DEEPCOPY_ATTR]
        return entry.hook

    def _reinstall(self) -> None:
        """Torch hooks for the current hooks: one pair per run of consecutive eager or traced hooks."""
        for segment in self._segments:
            segment.remove()
        self._segments = []
        run: list[_Entry] = []
        for entry in self._hooks.values():
            if run and entry.hook.eager != run[0].hook.eager:
                self._segments.append(_Segment(self._module, run, run[0].hook.eager))
                run = []
            run.append(entry)
        if run:
            self._segments.append(_Segment(self._module, run, run[0].hook.eager))


def _refuse_deepcopy(module: nn.Module):
    name = type(module).__name__

    def __deepcopy__(memo):
        raise RuntimeError(
            f"This {name} has context-parallel hooks (cp_hooks): a deep copy would keep hooks bound to the original's "
            "process groups. Call cp_hooks.disable_parallelism(model) first, copy the model, then enable_parallelism "
            "on each copy that should run in parallel."
        )

    setattr(__deepcopy__, "_cp_hooks_refusal", True)  # noqa: B010 (a marker attribute on the function)
    return __deepcopy__

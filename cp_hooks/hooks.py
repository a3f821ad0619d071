"""A small hook registry for `nn.Module`s: named, ordered, removable.

A module with hooks gets an instance-level `forward` that runs every hook's `pre_forward` in registration
order, the original forward inside every hook's `context()` (so state can be unwound on exceptions), then
every `post_forward` in reverse order. Removing the last hook deletes that instance attribute again, so the
module's `forward` is exactly the original object (bound method of the class, or the instance attribute
that was there before).
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from typing import Any

import torch.nn as nn

_REGISTRY_ATTR = "_cp_hook_registry"
_MISSING = object()


class ModelHook:
    """Base class of a hook. Override any of the three methods; each default does nothing."""

    def pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Return the (possibly changed) positional and keyword arguments of the forward."""
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        """Return the (possibly changed) output of the forward."""
        return output

    def context(self, module: nn.Module):
        """A context manager entered around the forward (after pre_forward); exited even on exceptions."""
        return contextlib.nullcontext()


class HookRegistry:
    """The ordered, named hooks of one module. Get it with `HookRegistry.of(module)`."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._hooks: "OrderedDict[str, ModelHook]" = OrderedDict()
        self._saved_forward = module.__dict__.get("forward", _MISSING)
        self._original_forward = module.forward

    @classmethod
    def of(cls, module: nn.Module, create: bool = True) -> "HookRegistry | None":
        """The registry of `module`, created on first use when `create` is true."""
        registry = module.__dict__.get(_REGISTRY_ATTR)
        if registry is None and create:
            registry = cls(module)
            # object.__setattr__: nn.Module.__setattr__ would try to register it as a submodule/buffer.
            object.__setattr__(module, _REGISTRY_ATTR, registry)
            registry._install()
        return registry

    @property
    def names(self) -> list[str]:
        """Hook names in the order they run."""
        return list(self._hooks)

    def get(self, name: str) -> ModelHook | None:
        """The hook registered under `name`, or None."""
        return self._hooks.get(name)

    def add(self, name: str, hook: ModelHook) -> None:
        """Append `hook` under `name`. Raises ValueError if the name is taken."""
        if name in self._hooks:
            raise ValueError(f"A hook named {name!r} is already registered on {type(self._module).__name__}.")
        self._hooks[name] = hook

    def remove(self, name: str) -> ModelHook:
        """Remove and return the hook `name`; the last removal restores the module's original forward."""
        hook = self._hooks.pop(name)
        if not self._hooks:
            self._uninstall()
        return hook

    def _install(self) -> None:
        original = self._original_forward
        hooks = self._hooks
        module = self._module

        @functools.wraps(original)
        def forward(*args, **kwargs):
            active = list(hooks.values())
            for hook in active:
                args, kwargs = hook.pre_forward(module, args, kwargs)
            with contextlib.ExitStack() as stack:
                for hook in active:
                    stack.enter_context(hook.context(module))
                output = original(*args, **kwargs)
            for hook in reversed(active):
                output = hook.post_forward(module, output)
            return output

        module.forward = forward

    def _uninstall(self) -> None:
        if self._saved_forward is _MISSING:
            del self._module.forward
        else:
            self._module.forward = self._saved_forward
        del self._module.__dict__[_REGISTRY_ATTR]

"""Keep a plan's hooks on the modules the plan names, when those modules are replaced after enable.

Libraries that adapt a model after loading replace submodules: peft wraps a targeted `nn.Linear` in a LoRA
layer (diffusers' `load_lora_weights`, `set_adapters`; `unload_lora_weights` puts the original back), and
quantizers swap layers. cp_hooks' split and gather hooks sit on the module they were installed on, which would
then run *inside* the wrapper: a gathered base output added to an adapter branch computed on the shard — a shape
error, or, where the shapes broadcast, a silently wrong result. So before each forward the model's hook looks at
every planned place (one dictionary look-up and identity test each) and, where a new module sits there, moves
the plan's hooks from the old module to the new one, built afresh for it. The result is what the plan would
have given had the new module been there at enable. A module that carries a processor of the plan's own
(`ContextParallelProcessor`) cannot follow that way and is refused instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from cp_hooks.forward.hooks import HookRegistry, ModelHook

# Builds the plan's hook for the module now at a planned place.
HookFactory = Callable[[nn.Module], ModelHook]


class _Slot:
    """One planned place: the parent's child dict, the attribute, the module there now, and the plan's hooks
    on it (name -> factory; a factory of None cannot be rebuilt and refuses a replacement)."""

    def __init__(self, name: str, children: dict, attribute: str, module: nn.Module) -> None:
        self.name, self.children, self.attribute, self.module = name, children, attribute, module
        self.hooks: dict[str, HookFactory | None] = {}


class PlannedModulesHook(ModelHook):
    """On the model, before anything else that communicates: the plan's hooks are on the modules in their places.

    Args:
        model: the enabled model.
        planned: (module, hook name or None, factory or None) for each planned module: the hook installed on it
            under that name, and how to build it for a replacement (None: a replacement is refused).
        installed: the enabling's list of (module, hook name) installed, kept current when hooks move (so that
            `disable_parallelism` removes them from where they are).
    """

    # Also under torch.compile, at every call: a compiled graph would check the modules it was traced with.
    eager = True

    def __init__(self, model: nn.Module, planned, installed: list) -> None:
        self.runtime = None
        self._installed = installed
        by_module: dict[int, list] = {}
        for module, hook_name, factory in planned:
            if module is not model:
                by_module.setdefault(id(module), []).append((hook_name, factory))
        self._slots: list[_Slot] = []
        for name, module in model.named_modules(remove_duplicate=False):
            if id(module) in by_module:
                parent_name, _, attribute = name.rpartition(".")
                slot = _Slot(name, model.get_submodule(parent_name)._modules, attribute, module)
                for hook_name, factory in by_module[id(module)]:
                    slot.hooks[hook_name or ""] = factory
                self._slots.append(slot)

    def pre_forward(self, module, args, kwargs):
        for slot in self._slots:
            if slot.children.get(slot.attribute) is not slot.module:
                self._follow(slot)
        return args, kwargs

    def _follow(self, slot: _Slot) -> None:
        replacement = slot.children.get(slot.attribute)
        if replacement is None or any(factory is None for factory in slot.hooks.values()):
            raise ValueError(
                f"The module '{slot.name}' was replaced after enable_parallelism (now "
                f"{type(replacement).__name__ if replacement is not None else 'removed'}), and the plan gives it a "
                "processor of its own (or it is gone), which cannot follow. Call disable_parallelism(model), change "
                "the model, then enable_parallelism(model, config) again (or make such changes before enabling)."
            )
        old_registry = HookRegistry.of(slot.module, create=False)
        for hook_name, factory in slot.hooks.items():
            if old_registry is not None and old_registry.get(hook_name) is not None:
                old_registry.remove(hook_name)
                self._installed.remove((slot.module, hook_name))
            assert factory is not None  # a None factory was refused above
            hook = factory(replacement)
            if hasattr(hook, "runtime"):
                hook.runtime = self.runtime
            HookRegistry.of(replacement).add(hook_name, hook)
            self._installed.append((replacement, hook_name))
        slot.module = replacement

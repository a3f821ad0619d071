"""Refuse a forward after a module that carries a plan's hooks was replaced in the model.

Libraries that adapt a model after loading replace submodules: peft wraps a targeted `nn.Linear` in a LoRA
layer, quantizers swap layers. cp_hooks' split and gather hooks stay on the module they were installed on,
which then runs inside the wrapper: a gathered base output is added to an adapter branch computed on the
shard. That fails with a shape error, or, where the shapes broadcast, silently gives a wrong result. A module
replaced before `enable_parallelism` is fine: the plan resolves to the wrapper.
"""

from __future__ import annotations

import torch.nn as nn

from cp_hooks.forward.hooks import ModelHook


class PlannedModulesHook(ModelHook):
    """On the model, before anything else that communicates: every planned module is still in its place.

    One dictionary look-up and identity test per planned module and forward.
    """

    # Also under torch.compile, at every call: a compiled graph would check the modules it was traced with.
    eager = True

    def __init__(self, model: nn.Module, modules) -> None:
        planned = {id(m) for m in modules if m is not model}
        self._slots = []  # (full name, the parent's _modules, attribute, the module the plan hooked)
        for name, module in model.named_modules(remove_duplicate=False):
            if id(module) in planned:
                parent_name, _, attribute = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                self._slots.append((name, parent._modules, attribute, module))

    def pre_forward(self, module, args, kwargs):
        for name, modules, attribute, planned in self._slots:
            if modules.get(attribute) is not planned:
                replacement = modules.get(attribute)
                raise ValueError(
                    f"The module '{name}' was replaced after enable_parallelism (now a "
                    f"{type(replacement).__name__}, e.g. a LoRA adapter or a quantizer that targets it), and its "
                    "context-parallel hooks stayed on the old one. Call disable_parallelism(model), change the model, "
                    "then enable_parallelism(model, config) again (or add such adapters before enabling)."
                )
        return args, kwargs

"""The plan registry: one mapping, class name -> `PlanDeclaration`, filled lazily.

Two kinds of declaration share the mapping:

- the built-in ones, one model family per file (`cp_hooks/plans/<family>.py`, a `PLANS` dict). The static index
  `cp_hooks.plans.index.BUILTIN_FAMILIES` says which family file declares which diffusers class, so a family file
  is imported only when a class it covers is looked up: enabling Flux imports `cp_hooks.plans.flux` and no other
  family, and a family whose import fails (a diffusers model module with a missing optional dependency) affects
  only the classes it declares.
- the user's, `register_plan(cls, plan)`, keyed by `cls.__name__`. A user declaration takes precedence over the
  built-in one of the same name, whichever was made first, and applies to `cls` itself (and its subclasses):
  another class that only shares the name does not pick it up.

A model class is looked up by walking its MRO by `__name__`: a subclass of a diffusers class gets its base's
plan unless a plan is registered for the subclass itself. Built-in declarations apply only to classes defined in
diffusers (a user class that happens to share a diffusers class's name does not pick up its plan).
"""

from __future__ import annotations

import importlib

import torch.nn as nn

from cp_hooks.plans.index import BUILTIN_FAMILIES
from cp_hooks.plans.specs import Plan, PlanDeclaration, UnsupportedConfig, normalize_plan

# Class name -> (declaration, the class a user registered it for; None for a built-in one): the user's
# registrations and the built-in families loaded so far.
_DECLARATIONS: dict[str, tuple[PlanDeclaration, type | None]] = {}
_LOADED_FAMILIES: set[str] = set()


def register_plan(
    model_class: type, plan: Plan, unsupported: tuple[UnsupportedConfig, ...] = (), no_batch_split: str = ""
) -> None:
    """Register `plan` for `model_class` (and its subclasses), in place of any built-in plan of that class.

    Args:
        model_class: the `nn.Module` subclass the plan is for; the registry keys it by its `__name__`.
        plan: the plan (see `cp_hooks.plans.specs`).
        unsupported: configurations of the class this plan cannot serve (see `UnsupportedConfig`);
            `enable_parallelism` refuses them when it uses this registered plan.
        no_batch_split: when set, the reason why this class's batch cannot be split over cfg groups
            (`cfg_degree > 1` is then refused): an input whose leading dimension equals the batch size but
            is not one row per sample (see `cp_hooks.forward.cfg`).

    Raises:
        TypeError: `model_class` is not an `nn.Module` subclass, or the plan is malformed.

    Example:
        >>> register_plan(MyDiT, {"": {"x": ContextParallelInput(1, 3)}, "head": ContextParallelOutput(1, 3)})
    """
    if not (isinstance(model_class, type) and issubclass(model_class, nn.Module)):
        raise TypeError(f"register_plan needs an nn.Module subclass, got {model_class!r}.")
    if not all(isinstance(u, UnsupportedConfig) for u in unsupported):
        raise TypeError("register_plan(unsupported=...) takes UnsupportedConfig entries.")
    _DECLARATIONS[model_class.__name__] = (PlanDeclaration(plan, tuple(unsupported), no_batch_split), model_class)


def builtin_declaration(class_name: str) -> PlanDeclaration:
    """The built-in declaration of the diffusers class `class_name`, from its family file (imported if needed).

    Raises:
        KeyError: no family file declares `class_name`.
        ImportError: the family file failed to import (the message names it and the class).
    """
    family = BUILTIN_FAMILIES[class_name]
    module = _load_family(family, class_name)
    return module.PLANS[class_name]


def declaration(model_class: type) -> PlanDeclaration | None:
    """The declaration for `model_class` or its nearest declared base class (by `__name__`), else None.

    Raises:
        ImportError: the family file of a built-in class in the MRO failed to import.
    """
    for cls in model_class.__mro__:
        name = cls.__name__
        builtin = name in BUILTIN_FAMILIES and cls.__module__.split(".")[0] == "diffusers"
        found, owner = _DECLARATIONS.get(name, (None, None))
        if found is not None and (cls is owner or (owner is None and builtin)):
            return found
        if builtin:  # not loaded yet, or the user's declaration of this name is for another class
            return builtin_declaration(name)
    return None


def registered_plan(model_class: type) -> Plan | None:
    """The plan registered for `model_class` or its nearest registered base class, else None."""
    found = declaration(model_class)
    return None if found is None else found.plan


def get_plan(model: nn.Module, plan: Plan | None = None) -> Plan:
    """The plan `enable_parallelism` would use for `model`.

    Lookup order: the explicit `plan`, then a plan registered for the model's class (the user's, else the
    built-in one), then the model's own `_cp_plan` attribute (diffusers' convention).

    Raises:
        ValueError: no plan is found; the message says how to declare one.
        ImportError: the family file holding the class's built-in plan failed to import.
    """
    if plan is not None:
        return normalize_plan(plan)
    found = registered_plan(type(model))
    if found is not None:
        return found
    own = getattr(model, "_cp_plan", None)
    if own:
        return normalize_plan(own)
    raise ValueError(
        f"No context-parallel plan for {type(model).__name__}. Pass one with enable_parallelism(model, config, "
        "plan={...}) or register one with cp_hooks.register_plan(ModelClass, plan): split the sequence inputs "
        "with ContextParallelInput and gather the final output with ContextParallelOutput (see docs/models.md, "
        "'Declaring a plan')."
    )


def refuse_unsupported(model: nn.Module, cfg_degree: int = 1) -> None:
    """Raise ValueError if `model` is configured in a way its registered plan declares it cannot serve.

    Reads only the model's own attributes (no communication), so every rank raises the same error.

    Raises:
        ValueError: `cfg_degree > 1` for a class whose batch cannot be split, or a refused configuration.
    """
    from cp_hooks.plans.resolve import resolve_modules

    found = declaration(type(model))
    if found is None:
        return
    if cfg_degree > 1 and found.no_batch_split:
        raise ValueError(
            f"{type(model).__name__} cannot split its batch over cfg groups (cfg_degree={cfg_degree}): "
            f"{found.no_batch_split} Use cfg_degree=1 with this model."
        )
    for u in found.unsupported:
        for name, module in resolve_modules(model, u.module):
            value: object = module
            for part in u.attribute.split("."):
                value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value in u.values:
                where = f"{name}.{u.attribute}" if name else u.attribute
                raise ValueError(
                    f"{type(model).__name__} with {where}={value!r} is not supported by cp_hooks' built-in plan: "
                    f"{u.reason} Run this configuration without context parallelism, or pass a plan of your own "
                    "to enable_parallelism(model, config, plan=...)."
                )


def _load_family(family: str, class_name: str):
    """Import the family file `cp_hooks.plans.<family>` and add its declarations (the user's keep precedence)."""
    name = f"{__package__}.{family}"
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"The built-in context-parallel plan of {class_name} is in {name}, which failed to import: {error}. "
            "Other model classes are unaffected; install what it needs, or pass a plan of your own to "
            "enable_parallelism(model, config, plan=...)."
        ) from error
    if family not in _LOADED_FAMILIES:
        for declared, value in module.PLANS.items():
            _DECLARATIONS.setdefault(declared, (value, None))
        _LOADED_FAMILIES.add(family)
    return module

"""The model catalogue: every built-in plan together with what verifies it, one file per model family.

A family's plans live in `cp_hooks/plans/<family>.py` (its `PLANS`, what the runtime reads); what verifies them
lives in `cp_hooks/verify/models/<family>.py` (found automatically), which defines
`ENTRIES = [ModelEntry(...), ...]` and, for classes of the family that cannot be served,
`UNSUPPORTED = {"ClassName": "the precise reason"}`. An entry is data: the diffusers class name (its plan and the
configurations the plan refuses are read from the plan registry, so each plan is stated once), a tiny config
(random weights, nothing downloaded), its input cases (one per way a pipeline calls the model: text-to-video,
image-to-video, masks, per-token timesteps, ...) and the context-parallel modes it is verified in. The test
suite (`tests/test_catalogue.py`, `tests/test_checker_backward.py`), the plan checker
(`python -m cp_hooks check`) and the models table of docs/models.md (`python -m cp_hooks table`) all read this
one list, and `tests/test_structure.py` checks that it covers exactly the classes the plan registry's index knows:
a plan cannot exist without its verification cases, and a mode is listed as supported exactly when it is tested.

    >>> from cp_hooks.verify.catalogue import get_entry
    >>> model, inputs = get_entry("FluxTransformer2DModel").build()
    >>> model(**inputs)[0].shape
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from cp_hooks.plans.registry import builtin_declaration
from cp_hooks.verify.catalogue.modes import HYBRID_MODES, MODES_2, Mode

InputBuilder = Callable[[dict, torch.Generator], dict]


@dataclass(frozen=True)
class ModelEntry:
    """A diffusers transformer class in the catalogue: how to build it tiny and how its pipeline calls it.

    Args:
        class_name: the diffusers class (`getattr(diffusers, class_name)`).
        plan: the plan to verify. None (a built-in class): the plan the registry declares for `class_name`
            (`cp_hooks/plans/<family>.py`), read when the entry is made; a user's family file gives its own.
        config: keyword arguments of a tiny configuration (a few layers, small widths, random weights).
        cases: case name -> `builder(config, generator) -> forward kwargs`. The builder gets the final config
            (after overrides), so inputs always match the model; it must use only `generator` for randomness.
        case_configs: case name -> config overrides that case needs (e.g. an image projection for I2V).
        anything: the model's real token counts (text length, image tokens) are not divisible by common
            degrees, so the model is verified with `ulysses_anything` / `ring_anything` and uneven inputs.
        modes: the two-rank modes it is verified in.
        hybrid_modes: the four-rank (ring x Ulysses) modes it is verified in; empty when too slow.
        unsupported: configurations the plan cannot serve (`UnsupportedConfig`), refused on every rank. None:
            the registry's declaration of a built-in class (else none).
        no_batch_split: why the class's batch cannot be split over cfg groups (`cfg_degree > 1` is then
            refused); empty when it can (`cp_hooks.forward.cfg` reads batched inputs from their shapes). None:
            the registry's declaration of a built-in class (else empty).
        redraw: `fnmatch` patterns of parameter names drawn again (normal, std 0.2) after the model is built:
            weights the class zero-initialises (gates, modulation, output layers) would otherwise hide the
            layers behind them from the comparison.
        prepare: `prepare(model, generator)` after the model is built and redrawn, for anything else a pipeline
            does to the model (a processor it installs, weights it always loads); randomness only from
            `generator`.
        note: one line for the models table (docs/models.md).
        forward_only_cases: case name -> why its gradients are not compared: the checker (`--backward`) and the
            gradient tests run its forward only and print the reason (e.g. a kernel without a backward on CPU).

    Example:
        >>> entry = get_entry("WanTransformer3DModel")
        >>> model, inputs = entry.build(case="i2v", seed=0)
    """

    class_name: str
    plan: dict | None = None
    config: dict = field(default_factory=dict)
    cases: dict[str, InputBuilder] = field(default_factory=dict)
    case_configs: dict[str, dict] = field(default_factory=dict)
    anything: bool = False
    modes: tuple[Mode, ...] = MODES_2
    hybrid_modes: tuple[Mode, ...] = HYBRID_MODES
    unsupported: tuple | None = None
    no_batch_split: str | None = None
    redraw: tuple[str, ...] = ()
    prepare: Callable[[nn.Module, torch.Generator], None] | None = None
    note: str = ""
    forward_only_cases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A plan is only as good as the cases that verify it: refuse an entry without any.
        if not self.cases:
            raise ValueError(f"ModelEntry {self.class_name!r} has no input cases; every plan needs at least one.")
        if self.plan is None:
            # A built-in class: its plan is stated once, in its family's plans file.
            declared = builtin_declaration(self.class_name)
            object.__setattr__(self, "plan", declared.plan)
            if self.unsupported is None:
                object.__setattr__(self, "unsupported", declared.unsupported)
            if self.no_batch_split is None:
                object.__setattr__(self, "no_batch_split", declared.no_batch_split)
        if self.unsupported is None:
            object.__setattr__(self, "unsupported", ())
        if self.no_batch_split is None:
            object.__setattr__(self, "no_batch_split", "")
        unknown = set(self.forward_only_cases) - set(self.cases)
        if unknown or not all(str(reason).strip() for reason in self.forward_only_cases.values()):
            raise ValueError(
                f"ModelEntry {self.class_name!r}: forward_only_cases maps cases of the entry to the "
                "reason their gradients are not compared; unknown cases "
                f"{sorted(unknown)} or an empty reason."
            )
        if not self.plan:
            raise ValueError(f"ModelEntry {self.class_name!r} has an empty plan.")

    def model_class(self) -> type[nn.Module]:
        """The diffusers class; raises ImportError when the installed diffusers lacks it."""
        import diffusers

        cls = getattr(diffusers, self.class_name, None)
        if cls is None:
            raise ImportError(f"diffusers {diffusers.__version__} has no class {self.class_name}; upgrade diffusers.")
        return cls

    def final_config(self, case: str, overrides: dict | None = None) -> dict:
        """The tiny config of `case` with the user's `overrides` applied on top."""
        return {**self.config, **self.case_configs.get(case, {}), **(overrides or {})}

    def build(
        self, case: str | None = None, seed: int = 0, overrides: dict | None = None, model_class: type | None = None
    ) -> tuple[nn.Module, dict]:
        """A randomly initialised model in eval mode and the inputs of `case` (default: the first case).

        `model_class` builds a subclass of the entry's class (with the same config and inputs) instead.

        Raises:
            KeyError: an unknown case (the message lists the known ones).
        """
        case = case or next(iter(self.cases))
        if case not in self.cases:
            raise KeyError(f"{self.class_name} has no case {case!r}; cases: {', '.join(self.cases)}.")
        config = self.final_config(case, overrides)
        torch.manual_seed(seed)
        model = (model_class or self.model_class())(**config).eval()
        self._redraw_and_prepare(model, torch.Generator().manual_seed(seed + 2))
        # diffusers models carry their full config (defaults included); a plain nn.Module gets the one given.
        inputs = self.cases[case](dict(getattr(model, "config", config)), torch.Generator().manual_seed(seed + 1))
        return model, inputs

    def _redraw_and_prepare(self, model: nn.Module, generator: torch.Generator) -> None:
        if self.redraw:
            _redraw(model, self.redraw, generator)
        if self.prepare is not None:
            self.prepare(model, generator)


def _redraw(model: nn.Module, patterns: tuple[str, ...], generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.2)


def family_modules() -> list[str]:
    """The module names of the verification family files, `cp_hooks.verify.models.<family>`, alphabetically."""
    from cp_hooks.verify import models

    return [
        f"{models.__name__}.{info.name}"
        for info in sorted(pkgutil.iter_modules(models.__path__), key=lambda info: info.name)
        if not info.name.startswith("_")
    ]


_loaded: dict[str, ModelEntry] | None = None
_unsupported: dict[str, str] = {}


def _load() -> dict[str, ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    unsupported: dict[str, str] = {}
    for name in family_modules():
        module = importlib.import_module(name)
        declared = [(e.class_name, e) for e in module.ENTRIES] + list(getattr(module, "UNSUPPORTED", {}).items())
        for class_name, value in declared:  # a ModelEntry, or the reason the class cannot be served
            if class_name in entries or class_name in unsupported:
                raise ValueError(f"{class_name} is declared twice (again in {name}).")
            (entries if isinstance(value, ModelEntry) else unsupported)[class_name] = value
    _unsupported.update(unsupported)
    return dict(sorted(entries.items(), key=lambda item: item[0].lower()))


def _entries() -> dict[str, ModelEntry]:
    # Loaded on first use, not at import: a family file imports this package for `ModelEntry`, so importing
    # one first (`import cp_hooks.verify.models.wan`) must not load the families while it is half-initialised.
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def __getattr__(name: str):
    # `ENTRIES` (class name -> ModelEntry, alphabetical) and `UNSUPPORTED` (class name -> the reason it cannot
    # be served), read from every family file on first access.
    if name == "ENTRIES":
        return _entries()
    if name == "UNSUPPORTED":
        _entries()
        return _unsupported
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_entry(class_name: str) -> ModelEntry:
    """The catalogue entry of `class_name`.

    Raises:
        KeyError: the class is not in the catalogue (the message lists the ones that are).
    """
    entries = _entries()
    if class_name not in entries:
        raise KeyError(f"{class_name} is not in the catalogue; known classes: {', '.join(sorted(entries))}.")
    return entries[class_name]


def entry_for_class(model_class: type) -> ModelEntry | None:
    """The entry of `model_class` or of its nearest base class in the catalogue, else None."""
    entries = _entries()
    for cls in model_class.__mro__:
        if cls.__name__ in entries:
            return entries[cls.__name__]
    return None

"""The plan checker: run a tiny model with and without context parallelism and compare every output.

    accelerate launch --multi_gpu --num_processes 2 -m cp_hooks check FluxTransformer2DModel --ring 2
    torchrun --nproc_per_node 2 -m cp_hooks check WanTransformer3DModel --ulysses 2 --case i2v
    torchrun --nproc_per_node 2 -m cp_hooks check MyDiT --plan my_plans:PLAN --config '{"num_layers": 1}'

The model is built from the catalogue's tiny config (random weights; `--config` overrides fields), run in
every process without context parallelism (the reference), then with the plan, and every output is
compared: max |difference| and the difference relative to the output's scale. A plan that misses a tensor
carrying the sequence gives a wrong result, not a crash, which is why the comparison is the test.
Exit status: 0 when every output of every case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass

import torch

from .catalogue import ENTRIES, ModelEntry, entry_for_class
from .catalogue.modes import Mode
from .config import ContextParallelConfig
from .parallel import disable_parallelism, enable_parallelism
from . import plans  # noqa: F401  (registers the built-in plans)
from .plan import normalize_plan, registered_plan

FP32_TOL = 1e-5  # max |cp - reference| / max(1, max |reference|), fp32 (DESIGN.md)


@dataclass(frozen=True)
class OutputDiff:
    """How one output of the context-parallel run differs from the single-process run."""

    index: int
    shape: tuple
    max_abs: float
    rel: float
    tol: float

    @property
    def passed(self) -> bool:
        """True when the relative difference is within the tolerance."""
        return self.rel <= self.tol


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max |actual - expected|, the same divided by max(1, max |expected|))."""
    if expected.numel() == 0:
        return 0.0, 0.0
    diff = (actual.double() - expected.double()).abs().max().item()
    return diff, diff / max(1.0, expected.double().abs().max().item())


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor of a model output (tensor, tuple/list, dict or diffusers output), in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _clone(value):
    # Models may modify inputs in place; both runs must see the same inputs.
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def compare_parallel(model, inputs: dict, config: ContextParallelConfig, plan: dict | None = None,
                     tol: float = FP32_TOL) -> list[OutputDiff]:
    """Run `model(**inputs)` alone and with context parallelism; the difference of every output tensor.

    Args:
        model: the model (every rank must hold the same weights).
        inputs: forward keyword arguments (the same on every rank).
        config: the context-parallel config (set up here if needed).
        plan: the plan to check; default: the registered plan or the model's `_cp_plan`.
        tol: the relative tolerance an output must meet.

    Returns:
        One `OutputDiff` per output tensor.

    Raises:
        ValueError: the parallel run returns another number or shape of outputs, or the plan is refused.
    """
    with torch.no_grad():
        reference = _tensors(model(**_clone(inputs)))
        enable_parallelism(model, config, plan)
        try:
            parallel = _tensors(model(**_clone(inputs)))
        finally:
            disable_parallelism(model)
    if len(parallel) != len(reference):
        raise ValueError(f"The parallel run returned {len(parallel)} outputs, the single-process run {len(reference)}.")
    diffs = []
    for i, (out, ref) in enumerate(zip(parallel, reference)):
        if out.shape != ref.shape:
            raise ValueError(f"Output {i} has shape {tuple(out.shape)} in parallel, {tuple(ref.shape)} alone: the plan "
                             "does not gather it back along the sequence (add a ContextParallelOutput).")
        diffs.append(OutputDiff(i, tuple(ref.shape), *relative_difference(out, ref), tol))
    return diffs


def check_entry(entry: ModelEntry, case: str, mode: Mode, *, anything: bool | None = None, plan: dict | None = None,
                overrides: dict | None = None, seed: int = 0, mesh=None, model_class: type | None = None,
                device: torch.device | str = "cpu") -> list[OutputDiff]:
    """Build the entry's tiny model for `case` and compare it under `mode` (see `compare_parallel`).

    `anything` defaults to the entry's own flag; `mesh` is an optional pre-built ("ring", "ulysses") mesh;
    `model_class` checks a subclass of the entry's class with the entry's config and inputs; `device` is where
    the model and inputs go (the process group's device).
    """
    model, inputs = entry.build(case, seed=seed, overrides=overrides, model_class=model_class)
    model, inputs = model.to(device), _to(inputs, device)
    anything = entry.anything if anything is None else anything
    config = ContextParallelConfig(**mode.config_kwargs(anything))
    if mesh is not None:
        config.setup(mesh)
    return compare_parallel(model, inputs, config, plan)


# ----------------------------------------------------------------------------------------------- CLI
HOW_TO_DECLARE = (
    "Declare a plan: a dict of module name -> spec. Split the sequence inputs with ContextParallelInput "
    "(split_output=True for positional embeddings computed from the full sequence), mark cross-attention over "
    "replicated text LocalAttention() when it calls SDPA directly, and gather the final projection with "
    "ContextParallelOutput. Check it with `--plan my_module:PLAN`, then register it with "
    "cp_hooks.register_plan(ModelClass, PLAN) (see README, 'Writing a plan for a new model')."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cp_hooks check", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_class", help="diffusers class name (e.g. FluxTransformer2DModel) or module:Class")
    parser.add_argument("--ring", type=int, default=None, help="ring degree (default 1)")
    parser.add_argument("--ulysses", type=int, default=None,
                        help="Ulysses degree (default: the world size divided by the ring degree)")
    parser.add_argument("--rotate-method", choices=("allgather", "alltoall"), default="allgather")
    parser.add_argument("--anything", action="store_true",
                        help="allow uneven sequence shards and head counts (ulysses_anything / ring_anything)")
    parser.add_argument("--config", default=None, help="JSON (or a path to a JSON file) of config fields that "
                        "override the catalogue's tiny config")
    parser.add_argument("--case", default=None, help="one input case (default: every case of the model)")
    parser.add_argument("--plan", default=None, help="module:NAME of a plan to check instead of the registered one")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _resolve_class(name: str) -> type:
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    import diffusers

    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type):
        raise SystemExit(f"error: diffusers has no class {name!r}; give a diffusers class name or module:Class.")
    return cls


def _load_plan(spec: str) -> dict:
    module, sep, attr = spec.partition(":")
    if not sep:
        raise SystemExit(f"error: --plan takes module:NAME (e.g. my_plans:PLAN), got {spec!r}.")
    sys.path.insert(0, os.getcwd())  # a plan file next to the user's script
    return normalize_plan(getattr(importlib.import_module(module), attr))


def _load_overrides(text: str | None) -> dict:
    if text is None:
        return {}
    if os.path.isfile(text):
        with open(text) as f:
            text = f.read()
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: --config is neither a JSON object nor a JSON file: {e}.") from None
    if not isinstance(overrides, dict):
        raise SystemExit("error: --config must be a JSON object of config fields, e.g. '{\"num_layers\": 1}'.")
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m cp_hooks check`; returns the exit status (0 = every output passes)."""
    args = _parser().parse_args(argv)
    say = _printer()
    model_class = _resolve_class(args.model_class)
    plan = _load_plan(args.plan) if args.plan else None
    if plan is None and registered_plan(model_class) is None and not getattr(model_class, "_cp_plan", None):
        say(f"{model_class.__name__} has no context-parallel plan (none built in, no `_cp_plan`).\n{HOW_TO_DECLARE}")
        return 1
    entry = entry_for_class(model_class)
    if entry is None:
        say(f"{model_class.__name__} is not in the catalogue, so the checker cannot shape its inputs. Add a "
            f"ModelEntry for it in cp_hooks/catalogue/ (a tiny config and a function that builds the inputs as its "
            f"pipeline does); catalogued classes: {', '.join(sorted(ENTRIES))}.")
        return 1

    from .launch import init_distributed

    device = init_distributed()
    world = torch.distributed.get_world_size()
    ring = args.ring or 1
    ulysses = args.ulysses or max(world // ring, 1)
    mode = Mode(ring, ulysses, args.rotate_method)
    overrides = _load_overrides(args.config)
    anything = args.anything
    cases = [args.case] if args.case else list(entry.cases)
    say(f"{model_class.__name__}: {mode.name} on {world} processes"
        f"{' with the anything flags' if anything else ''}; tolerance {FP32_TOL:g} (fp32, relative)")
    ok = True
    for case in cases:
        try:
            diffs = check_entry(entry, case, mode, anything=anything, plan=plan, overrides=overrides, seed=args.seed,
                                model_class=model_class, device=device)
        except (ValueError, TypeError, KeyError) as e:
            fix = "" if anything or "anything" not in str(e) else " Rerun with --anything."
            say(f"  {case}: ERROR {e}{fix}")
            ok = False
            continue
        for d in diffs:
            say(f"  {case} output {d.index} {list(d.shape)}: max diff {d.max_abs:.3e}, relative {d.rel:.3e} "
                f"-> {'PASS' if d.passed else 'FAIL'}")
        if not all(d.passed for d in diffs):
            ok = False
            say(f"  {case}: the context-parallel result is wrong. A tensor that carries the sequence is probably not "
                "split (text tokens, masks, per-token conditioning), a positional embedding is not split with its "
                "tokens (split_output=True), or attention over replicated keys is not marked LocalAttention().")
    say("PASS" if ok else "FAIL")
    torch.distributed.destroy_process_group()
    return 0 if ok else 1


def _printer():
    rank = int(os.environ.get("RANK", "0"))

    def say(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    return say

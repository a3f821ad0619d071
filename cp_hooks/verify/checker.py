"""The plan checker: run a tiny model with and without context parallelism and compare every output.

    accelerate launch --multi_gpu --num_processes 2 -m cp_hooks check FluxTransformer2DModel --ring 2
    torchrun --nproc_per_node 2 -m cp_hooks check WanTransformer3DModel --ulysses 2 --case i2v
    torchrun --nproc_per_node 2 -m cp_hooks check MyDiT --plan my_plans:PLAN --config '{"num_layers": 1}'
    torchrun --nproc_per_node 2 -m cp_hooks check my_family:MyDiT --entry my_family:ENTRIES --backward
    torchrun --nproc_per_node 2 -m cp_hooks check FluxTransformer2DModel --ulysses 2 --backward

The model is built from the catalogue's tiny config (random weights; `--config` overrides fields), or from
the `ModelEntry` given with `--entry` for a class outside the catalogue (its plan, config and cases), run in
every process without context parallelism (the reference), then with the plan, and every output is
compared: max |difference| and the difference relative to the output's scale. A plan that misses a tensor
carrying the sequence gives a wrong result, not a crash, which is why the comparison is the test.
`--backward` also compares the gradients of a weighted sum of the outputs: every parameter's (after
`reduce_gradients`) and every floating-point input's (see `compare_parallel_backward`), except for the cases
an entry marks forward-only (`ModelEntry.forward_only_cases`, whose reason is printed instead).

A wrong plan may also make the model raise (a shape `RuntimeError` in a layer that got a shard it cannot take,
a refused plan): every rank that raises prints a FAIL line naming the module whose forward raised (the
innermost one running), and the ranks then agree, through the process group's store and not a collective, on
how the case ended. A rank that another rank's exception left waiting in a collective is released by ending the
process groups (it then prints its own FAIL line, naming the module it waited in) and the remaining cases are
not run: the checker never hangs and never ends in a bare traceback.
Exit status: 0 when every output (and gradient) of every case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from cp_hooks.config import ContextParallelConfig
from cp_hooks.forward.tree import iter_tensors
from cp_hooks.parallel import disable_parallelism, enable_parallelism
from cp_hooks.plans.registry import registered_plan
from cp_hooks.plans.specs import normalize_plan
from cp_hooks.training import reduce_gradients
from cp_hooks.verify.catalogue import ENTRIES, ModelEntry, entry_for_class
from cp_hooks.verify.catalogue.modes import Mode

FP32_TOL = 1e-5  # max |cp - reference| / max(1, max |reference|), fp32 (docs/architecture.md, Tolerances)
# How long a rank that finished a case waits for the others before it concludes that they are stuck in a
# collective (left there by a rank that raised) and ends the process groups: longer for a rank whose own case
# passed (a peer may just be slower), shorter for one that raised (its peers cannot complete without it).
AGREE_TIMEOUT_S = 300.0
AGREE_AFTER_FAILURE_S = 20.0


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


@dataclass(frozen=True)
class GradientDiff:
    """How one gradient of the context-parallel run differs from the single-process run.

    Attributes:
        kind: "parameter" or "input".
        name: the parameter's name in `model.named_parameters()`, or the input's keyword (with `[i]` / `[key]`
            for a tensor inside a list, tuple or dict, e.g. "image_rotary_emb[0]").
        shape: the tensor's shape.
        max_abs / rel: as for outputs: max |parallel - reference| and that over max(1, max |reference|).
        tol: the relative tolerance.
        missing: set when exactly one run produced a gradient and it is not all zero: "in the parallel run"
            or "in the single-process run" (the one that has no gradient); such a gradient fails.
    """

    kind: str
    name: str
    shape: tuple
    max_abs: float
    rel: float
    tol: float
    missing: str | None = None

    @property
    def passed(self) -> bool:
        """True when both runs agree on whether there is a gradient and it is within the tolerance."""
        return self.missing is None and self.rel <= self.tol


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max |actual - expected|, the same divided by max(1, max |expected|))."""
    if expected.numel() == 0:
        return 0.0, 0.0
    diff = (actual.double() - expected.double()).abs().max().item()
    return diff, diff / max(1.0, expected.double().abs().max().item())


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor of a model output (tensor, tuple/list, dict or diffusers output), in order."""
    return list(iter_tensors(output))


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


def compare_parallel(
    model, inputs: dict, config: ContextParallelConfig, plan: dict | None = None, tol: float = FP32_TOL
) -> list[OutputDiff]:
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
    _check_outputs(parallel, reference)
    return [
        OutputDiff(i, tuple(ref.shape), *relative_difference(out, ref), tol)
        for i, (out, ref) in enumerate(zip(parallel, reference))
    ]


def compare_parallel_backward(
    model, inputs: dict, config: ContextParallelConfig, plan: dict | None = None, tol: float = FP32_TOL, seed: int = 0
) -> list[GradientDiff]:
    """Back-propagate the same loss alone and with context parallelism; the difference of every gradient.

    The loss is `sum_i (output_i * w_i).sum()` over the floating-point output tensors, with a fixed random
    weight `w_i` per output (from a generator seeded with `seed`, so identical on every rank): a plain sum
    would weigh every token alike and hide a gradient sent to the wrong token. Every floating-point input
    tensor except masks is made to require a gradient (integer and boolean ones cannot). The reference runs
    in this process without parallelism; then the model runs with `plan`, every rank back-propagates the
    same loss, `reduce_gradients(model, config)` sums the parameter gradients, and the input gradients are
    summed over the context-parallel group (each rank holds the partial gradient of the replicated inputs
    from its own tokens). The model is left without parallelism and with `.grad` cleared (set to None).

    A model that cannot back-propagate as written because it overwrites a tensor autograd saved (diffusers'
    CogVideoX attention in fp32) is compared with autograd saving copies, in both runs, and a RuntimeWarning
    says so. Only the single-process run decides this, so a plan's fault cannot trigger it.

    Args:
        model: the model (every rank must hold the same weights); its mode (eval / train) is kept.
        inputs: forward keyword arguments (the same on every rank); not modified.
        config: the context-parallel config (set up here if needed).
        plan: the plan to check; default: the registered plan or the model's `_cp_plan`.
        tol: the relative tolerance a gradient must meet.
        seed: seeds the loss weights.

    Returns:
        One `GradientDiff` per parameter, then one per input tensor, that has a gradient in either run
        (parameters and inputs without a gradient in both runs are left out).

    Raises:
        ValueError: no output or no parameter takes part in autograd, the parallel run returns another number
            or shape of outputs, or the plan is refused.

    Example:
        >>> diffs = compare_parallel_backward(model, inputs, ContextParallelConfig(ulysses_degree=2))
        >>> worst = max(diffs, key=lambda d: d.rel)
    """
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    try:
        saved: Callable[[], Any] = contextlib.nullcontext
        try:
            ref_params, ref_inputs, outputs, weights = _reference_backward(model, inputs, params, seed, saved)
        except RuntimeError as e:
            if "modified by an inplace operation" not in str(e):
                raise
            # The model itself cannot back-propagate as written: it overwrites a tensor that autograd saved
            # (CogVideoX's attention writes the rotated queries back into a slice of the query, and in fp32
            # `apply_rotary_emb`'s `.float()` is no copy). Both runs then save copies: the math the forward did.
            warnings.warn(
                f"{type(model).__name__} modifies a tensor in place that autograd saved for its "
                "backward, so it cannot be trained in this dtype as it is; the gradients are compared "
                "with copies of the saved tensors.",
                RuntimeWarning,
                stacklevel=2,
            )
            model.zero_grad(set_to_none=True)
            saved = _copies_of_saved_tensors
            ref_params, ref_inputs, outputs, weights = _reference_backward(model, inputs, params, seed, saved)
        model.zero_grad(set_to_none=True)

        enable_parallelism(model, config, plan)
        try:
            with saved():
                leaves, parallel = _forward_with_leaves(model, inputs)
            _check_outputs(parallel, outputs)
            _weighted_sum(parallel, weights).backward()
            reduce_gradients(model, config)
            par_inputs = _sum_over_group({name: _grad(leaf) for name, leaf in leaves.items()}, leaves, config)
        finally:
            disable_parallelism(model)
        par_params = {name: _grad(p) for name, p in params.items()}
    finally:
        model.zero_grad(set_to_none=True)
    diffs = [
        _gradient_diff("parameter", name, par_params[name], ref_params[name], params[name], tol) for name in params
    ]
    diffs += [_gradient_diff("input", name, par_inputs[name], ref_inputs[name], leaves[name], tol) for name in leaves]
    return [d for d in diffs if d is not None]


def _reference_backward(model, inputs: dict, params: dict, seed: int, saved):
    """The single-process run: (parameter gradients, input gradients, outputs, loss weights)."""
    with saved():
        leaves, outputs = _forward_with_leaves(model, inputs)
    weights = _loss_weights(outputs, seed)
    _weighted_sum(outputs, weights).backward()
    ref_params = {name: _grad(p) for name, p in params.items()}
    ref_inputs = {name: _grad(leaf) for name, leaf in leaves.items()}
    return ref_params, ref_inputs, [out.detach() for out in outputs], weights


def _copies_of_saved_tensors():
    """Autograd saves a copy of every tensor it keeps for the backward (immune to later in-place writes)."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def _forward_with_leaves(model, inputs: dict) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Run `model` on fresh copies of `inputs` whose floating-point tensors require a gradient.

    Returns (input name -> leaf tensor, the output tensors). The model gets a non-leaf copy of each leaf:
    a model may write into an input in place, which autograd refuses on a leaf that requires a gradient.
    Masks (a keyword containing "mask") stay constants even when they are floating point: models turn them
    into lengths or booleans (HunyuanVideo sums its text mask into an int), which autograd refuses.
    """
    leaves: dict[str, torch.Tensor] = {}

    def prepare(value, name):
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point() or "mask" in name.split("[")[0].lower():
                return value.clone()
            leaf = value.detach().clone().requires_grad_(True)
            leaves[name] = leaf
            return leaf.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(prepare(v, f"{name}[{i}]") for i, v in enumerate(value))
        if isinstance(value, dict):
            return {k: prepare(v, f"{name}[{k!r}]") for k, v in value.items()}
        return value

    kwargs = {name: prepare(value, name) for name, value in inputs.items()}
    with torch.enable_grad():
        outputs = _tensors(model(**kwargs))
    return leaves, outputs


def _loss_weights(outputs: list[torch.Tensor], seed: int) -> list[torch.Tensor | None]:
    """A fixed random weight per floating-point output (None for the others), the same on every rank."""
    generator = torch.Generator().manual_seed(seed)
    weights: list[torch.Tensor | None] = []
    for out in outputs:
        if out.is_floating_point() and out.requires_grad:
            # Drawn on the CPU in float64 and then cast: the same numbers on every device and rank.
            weights.append(torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.device, out.dtype))
        else:
            weights.append(None)
    if all(w is None for w in weights):
        raise ValueError(
            "No output of the model depends on a parameter or input that requires a gradient; there is "
            "nothing to back-propagate (are the parameters frozen, requires_grad=False?)."
        )
    return weights


def _weighted_sum(outputs: list[torch.Tensor], weights: list[torch.Tensor | None]) -> torch.Tensor:
    # Accumulated in at least fp32, so that a half-precision model's loss does not round away gradients.
    terms = [
        (out * w).sum(dtype=torch.promote_types(out.dtype, torch.float32))
        for out, w in zip(outputs, weights)
        if w is not None
    ]
    return torch.stack(terms).sum()


def _check_outputs(parallel: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    if len(parallel) != len(reference):
        raise ValueError(f"The parallel run returned {len(parallel)} outputs, the single-process run {len(reference)}.")
    for i, (out, ref) in enumerate(zip(parallel, reference)):
        if out.shape != ref.shape:
            raise ValueError(
                f"Output {i} has shape {tuple(out.shape)} in parallel, {tuple(ref.shape)} alone: the plan "
                "does not gather it back along the sequence (add a ContextParallelOutput)."
            )


def _grad(tensor: torch.Tensor) -> torch.Tensor | None:
    return None if tensor.grad is None else tensor.grad.detach().clone()


def _sum_over_group(
    grads: dict[str, torch.Tensor | None], leaves: dict[str, torch.Tensor], config: ContextParallelConfig
) -> dict[str, torch.Tensor | None]:
    """Sum the input gradients over the context-parallel group (None where no rank has one).

    Every rank must issue the same all-reduce, so the ranks first agree on which inputs have a gradient
    anywhere (a rank whose tokens do not reach an input has None there) and fill the gaps with zeros.
    """
    if not grads:
        return grads
    names = list(grads)
    device = next(iter(leaves.values())).device
    group = config.runtime.world_group  # every rank that ran a part, as reduce_gradients uses
    anywhere = torch.tensor([grads[n] is not None for n in names], dtype=torch.int32, device=device)
    dist.all_reduce(anywhere, op=dist.ReduceOp.MAX, group=group)
    present = [n for n, flag in zip(names, anywhere.tolist()) if flag]
    if present:
        full = [g if (g := grads[n]) is not None else torch.zeros_like(leaves[n]) for n in present]
        # Gradients share their leaf's dtype, and the inputs of one model one dtype in practice; a float64
        # buffer carries any floating-point dtype exactly.
        flat = torch.cat([g.reshape(-1).double() for g in full])
        dist.all_reduce(flat, group=group)
        offset = 0
        for n, g in zip(present, full):
            grads[n] = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()
    return grads


def _gradient_diff(
    kind: str, name: str, actual: torch.Tensor | None, expected: torch.Tensor | None, like: torch.Tensor, tol: float
) -> GradientDiff | None:
    """The difference of one gradient; None when neither run has one. A missing gradient counts as zero,
    and fails unless the other run's is all zero."""
    if actual is None and expected is None:
        return None
    missing = None
    if actual is None or expected is None:
        present = expected if actual is None else actual
        assert present is not None  # one of the two, as checked above
        if bool(present.ne(0).any()):
            missing = "in the parallel run" if actual is None else "in the single-process run"
        zeros = torch.zeros_like(like)
        actual, expected = (zeros, present) if actual is None else (present, zeros)
    assert actual is not None and expected is not None
    return GradientDiff(kind, name, tuple(like.shape), *relative_difference(actual, expected), tol, missing)


def check_entry(
    entry: ModelEntry,
    case: str,
    mode: Mode,
    *,
    anything: bool | None = None,
    plan: dict | None = None,
    overrides: dict | None = None,
    seed: int = 0,
    mesh=None,
    model_class: type | None = None,
    device: torch.device | str = "cpu",
) -> list[OutputDiff]:
    """Build the entry's tiny model for `case` and compare it under `mode` (see `compare_parallel`).

    `anything` defaults to the entry's own flag; `mesh` is an optional pre-built ("ring", "ulysses") mesh;
    `model_class` checks a subclass of the entry's class with the entry's config and inputs; `device` is where
    the model and inputs go (the process group's device).
    """
    model, inputs, config = _prepare(entry, case, mode, anything, overrides, seed, mesh, model_class, device)
    return compare_parallel(model, inputs, config, plan)


def _prepare(entry, case, mode, anything, overrides, seed, mesh, model_class, device):
    """The entry's model and inputs for `case` on `device`, and the config of `mode` (see `check_entry`)."""
    model, inputs = entry.build(case, seed=seed, overrides=overrides, model_class=model_class)
    model, inputs = model.to(device), _to(inputs, device)
    anything = entry.anything if anything is None else anything
    config = ContextParallelConfig(**mode.config_kwargs(anything))
    if mesh is not None:
        config.setup(mesh)
    return model, inputs, config


# ----------------------------------------------------------------------------------------------- CLI
HOW_TO_DECLARE = (
    "Declare a plan: a dict of module name -> spec. Split the sequence inputs with ContextParallelInput "
    "(split_output=True for positional embeddings computed from the full sequence), mark cross-attention over "
    "replicated text LocalAttention() when it calls SDPA directly, and gather the final projection with "
    "ContextParallelOutput. Check it with `--plan my_module:PLAN`, then register it with "
    "cp_hooks.register_plan(ModelClass, PLAN) (see docs/models.md, 'Writing a plan for a new model')."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cp_hooks check", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_class", help="diffusers class name (e.g. FluxTransformer2DModel) or module:Class")
    parser.add_argument("--ring", type=int, default=None, help="ring degree (default 1)")
    parser.add_argument(
        "--ulysses", type=int, default=None, help="Ulysses degree (default: the world size divided by the ring degree)"
    )
    parser.add_argument("--rotate-method", choices=("allgather", "alltoall"), default="allgather")
    parser.add_argument(
        "--anything",
        action="store_true",
        help="allow uneven sequence shards and head counts (ulysses_anything / ring_anything); "
        "on by default for catalogue entries whose real token counts do not divide",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="JSON (or a path to a JSON file) of config fields that override the catalogue's tiny config",
    )
    parser.add_argument("--case", default=None, help="one input case (default: every case of the model)")
    parser.add_argument("--plan", default=None, help="module:NAME of a plan to check instead of the registered one")
    parser.add_argument(
        "--entry",
        default=None,
        help="module:NAME of your own ModelEntry (or list of entries, e.g. a family file's ENTRIES) "
        "for a class outside the catalogue: its plan, tiny config and input cases are checked",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backward",
        action="store_true",
        help="also compare the gradients of every parameter (after reduce_gradients) and of every "
        "floating-point input, for a weighted sum of the outputs as the loss",
    )
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


def _load_attribute(option: str, spec: str, example: str):
    module, sep, attr = spec.partition(":")
    if not sep:
        raise SystemExit(f"error: {option} takes module:NAME (e.g. {example}), got {spec!r}.")
    sys.path.insert(0, os.getcwd())  # a plan or family file next to the user's script
    return getattr(importlib.import_module(module), attr)


def _load_plan(spec: str) -> dict:
    return normalize_plan(_load_attribute("--plan", spec, "my_plans:PLAN"))


def _load_entry(spec: str, model_class: type) -> ModelEntry:
    found = _load_attribute("--entry", spec, "my_family:ENTRIES")
    entries = found if isinstance(found, (list, tuple)) else [found]
    if not all(isinstance(e, ModelEntry) for e in entries):
        raise SystemExit(f"error: --entry {spec} must name a cp_hooks.verify.catalogue.ModelEntry or a list of them.")
    for entry in entries:
        if entry.class_name == model_class.__name__:
            return entry
    raise SystemExit(
        f"error: --entry {spec} has no ModelEntry for {model_class.__name__}; it has "
        f"{', '.join(e.class_name for e in entries)}."
    )


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
    entry = _load_entry(args.entry, model_class) if args.entry else entry_for_class(model_class)
    if plan is None and entry is not None and args.entry:
        plan = normalize_plan(entry.plan)  # the user's entry is checked with its own plan
    if plan is None and registered_plan(model_class) is None and not getattr(model_class, "_cp_plan", None):
        say(f"{model_class.__name__} has no context-parallel plan (none built in, no `_cp_plan`).\n{HOW_TO_DECLARE}")
        return 1
    if entry is None:
        say(
            f"{model_class.__name__} is not in the catalogue, so the checker cannot shape its inputs. Write a "
            f"ModelEntry for it (its plan, a tiny config and a function that builds the inputs as its pipeline "
            f"does) and pass it with --entry my_family:ENTRIES; catalogued classes: {', '.join(sorted(ENTRIES))}."
        )
        return 1

    from cp_hooks.launch import init_distributed, shutdown_distributed

    device = init_distributed()
    ok = _check_cases(args, entry, model_class, plan, device, say)
    # Not in a `finally`: after an exception on one rank the others may sit in a collective that a barrier
    # would not match; the launcher ends them instead.
    shutdown_distributed()
    return 0 if ok else 1


def _check_cases(args, entry: ModelEntry, model_class: type, plan: dict | None, device, say) -> bool:
    """Run (and print) the checks of every requested case; True when everything passes."""
    world = dist.get_world_size()
    ring = args.ring or 1
    ulysses = args.ulysses or max(world // ring, 1)
    mode = Mode(ring, ulysses, args.rotate_method)
    overrides = _load_overrides(args.config)
    anything = args.anything or entry.anything  # the catalogue's uneven inputs need the flags
    cases = [args.case] if args.case else list(entry.cases)
    say(
        f"{model_class.__name__}: {mode.name} on {world} processes"
        f"{' with the anything flags' if anything else ''}{', outputs and gradients' if args.backward else ''}; "
        f"tolerance {FP32_TOL:g} (fp32, relative)"
    )
    ok = True
    agreement = _Agreement()
    for number, case in enumerate(cases):
        backward = args.backward and case not in entry.forward_only_cases
        tracker = ModuleTracker()
        try:
            model, inputs, config = _prepare(
                entry, case, mode, anything, overrides, args.seed, None, model_class, device
            )
            with tracker.watching(model):
                diffs = compare_parallel(model, inputs, config, plan)
                grads = _backward_with_notes(case, model, inputs, config, plan, args.seed, say) if backward else []
        except Exception as e:  # whatever a wrong plan makes the model raise: reported, never a bare traceback
            fix = "" if anything or "anything" not in str(e) else " Rerun with --anything."
            print(f"  [rank {dist.get_rank()}] {case}: FAIL {tracker.describe(e)}{fix}", flush=True)
            ok = False
            if not agreement.after_case(number, failed=True):
                say("FAIL")
                return False
            continue
        if not agreement.after_case(number, failed=False):
            say("FAIL")
            return False
        for d in diffs:
            say(
                f"  {case} output {d.index} {list(d.shape)}: max diff {d.max_abs:.3e}, relative {d.rel:.3e} "
                f"-> {'PASS' if d.passed else 'FAIL'}"
            )
        if not all(d.passed for d in diffs):
            ok = False
            say(
                f"  {case}: the context-parallel result is wrong. A tensor that carries the sequence is probably not "
                "split (text tokens, masks, per-token conditioning), a positional embedding is not split with its "
                "tokens (split_output=True), or attention over replicated keys is not marked LocalAttention()."
            )
        if backward:
            ok = _report_gradients(case, grads, say) and ok
        elif args.backward:
            say(f"  {case} gradients: not checked, the case is forward-only: {entry.forward_only_cases[case]}")
    say("PASS" if ok else "FAIL")
    return ok


class ModuleTracker:
    """Which module of a model is running: the stack of modules whose forward has started and not returned.

    Global forward pre- and post-hooks (torch's `register_module_forward_pre_hook` / `_hook`) push and pop
    the names of the model's modules while `watching(model)` is active. A forward that raises never reaches
    its post-hook, so after an exception the stack ends with the module whose forward raised (or, on a rank
    that a peer's failure left waiting, the module whose collective it waited in).

    Example:
        >>> tracker = ModuleTracker()
        >>> with tracker.watching(model):
        ...     model(**inputs)   # raises in blocks.0.attn
        >>> tracker.describe(error)  # "RuntimeError in module 'blocks.0.attn' (Attention): ..."
    """

    def __init__(self) -> None:
        self.stack: list[tuple[str, str]] = []  # (name, class name), outermost first
        self._names: dict[int, str] = {}

    @contextlib.contextmanager
    def watching(self, model: torch.nn.Module):
        """Track the forwards of `model`'s modules (the names as in `named_modules()`, "" for the model)."""
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self._names = {id(module): name for name, module in model.named_modules()}
        self.stack.clear()
        handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._leave)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _enter(self, module, args) -> None:
        name = self._names.get(id(module))
        if name is not None:
            self.stack.append((name, type(module).__name__))

    def _leave(self, module, args, output) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        # Drop this module and anything above it that did not return (an exception caught inside the model).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == name:
                del self.stack[i:]
                break

    def describe(self, error: BaseException) -> str:
        """One line: the exception, the module whose forward raised, and its message's first line."""
        message = " ".join(str(error).split()) or "(no message)"
        if self.stack:
            name, cls = self.stack[-1]
            where = f"in module '{name or '<model>'}' ({cls})"
            if len(self.stack) > 1 and name:
                where += f", inside {' > '.join(n or '<model>' for n, _ in self.stack[:-1])}"
        else:
            where = "outside any module's forward (enabling the plan, comparing, or the backward)"
        return f"{type(error).__name__} {where}: {message}"


class _Agreement:
    """After each case the ranks agree, through the default process group's store (no collective), that all of
    them finished it; see the module docstring. `after_case` returns False when the checking must stop: some
    rank did not finish (it waited in a collective that a failing rank never joined), and the process groups
    were ended to release it."""

    _runs = itertools.count()  # every rank makes the same checks in the same order: the same run numbers

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.store = dist.distributed_c10d._get_default_store()
        self.prefix = f"cp_hooks_check/run{next(self._runs)}/"

    def after_case(self, number: int, failed: bool) -> bool:
        if self.world == 1:
            return True
        key = f"{self.prefix}case{number}"
        self.store.set(f"{key}/rank{self.rank}", "1" if failed else "0")
        try:
            if self.store.check([f"{key}/abort"]):
                raise TimeoutError  # a peer already gave up on this case and ended the groups
            timeout = AGREE_AFTER_FAILURE_S if failed else AGREE_TIMEOUT_S
            self.store.wait([f"{key}/rank{r}" for r in range(self.world)], timedelta(seconds=timeout))
            if not self.store.check([f"{key}/abort"]):
                return True
        except Exception:  # noqa: BLE001  a timeout (its type differs between torch versions), or a gone store
            pass
        missing = [r for r in range(self.world) if not self._has(f"{key}/rank{r}")]
        if missing:
            print(
                f"  [rank {self.rank}] FAIL: rank(s) {missing} did not finish case {number + 1}: they wait in a "
                "collective that a failing rank left; ending the process groups to release them, the remaining "
                "cases are not run",
                flush=True,
            )
        self._set(f"{key}/abort")
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        if missing:
            # Give the released ranks a moment to print their own FAIL lines before this one exits (a launcher
            # ends every rank once one has exited).
            with contextlib.suppress(Exception):
                self.store.wait([f"{key}/rank{r}" for r in missing], timedelta(seconds=AGREE_AFTER_FAILURE_S))
        return False

    def _has(self, key: str) -> bool:
        try:
            return bool(self.store.check([key]))
        except Exception:  # noqa: BLE001
            return False

    def _set(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self.store.set(key, "1")


def _backward_with_notes(case: str, model, inputs: dict, config, plan, seed: int, say) -> list[GradientDiff]:
    """`compare_parallel_backward`, its RuntimeWarnings printed once (by rank 0) as notes of the case."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        grads = compare_parallel_backward(model, inputs, config, plan, seed=seed)
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            say(f"  {case} note: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return grads


MAX_LISTED_FAILURES = 10  # failing gradients listed per case; the rest are counted


def _report_gradients(case: str, grads: list[GradientDiff], say) -> bool:
    """Print the worst parameter and input gradient of a case, and the failing ones; True when all pass."""
    for kind in ("parameter", "input"):
        of_kind = [d for d in grads if d.kind == kind]
        if not of_kind:
            what = "no parameter requires one" if kind == "parameter" else "no floating-point input besides masks"
            say(f"  {case} gradients of the {kind}s: none ({what})")
            continue
        worst = max(of_kind, key=lambda d: (not d.passed, d.rel))
        say(
            f"  {case} gradients of {len(of_kind)} {kind}s: worst {worst.name} {list(worst.shape)}: max diff "
            f"{worst.max_abs:.3e}, relative {worst.rel:.3e} -> {'PASS' if all(d.passed for d in of_kind) else 'FAIL'}"
        )
    failed = [d for d in grads if not d.passed]
    for d in failed[:MAX_LISTED_FAILURES]:
        why = f"no gradient {d.missing}, a non-zero one in the other" if d.missing else f"relative {d.rel:.3e}"
        say(f"    FAIL {d.kind} {d.name} {list(d.shape)}: {why}")
    if len(failed) > MAX_LISTED_FAILURES:
        say(f"    ... and {len(failed) - MAX_LISTED_FAILURES} more failing gradients")
    if failed:
        say(
            f"  {case}: the context-parallel gradients are wrong although every rank back-propagated the same loss. "
            "If the outputs above pass, something on the parallel path has a backward that does not match its "
            "forward: a collective or attention of the model's own (outside cp_hooks) without an autograd-correct "
            "backward, or a tensor moved between ranks around the plan's hooks (see cp_hooks.forward.sharding, "
            "'Gradient convention')."
        )
    return not failed


def _printer():
    rank = int(os.environ.get("RANK", "0"))

    def say(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    return say

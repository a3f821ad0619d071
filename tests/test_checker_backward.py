"""Every catalogued model's gradients under context parallelism against the same model in one process (fp32).

The forward tests (tests/test_catalogue.py) prove the outputs; training needs the gradients too, and a
split or gather whose backward does not match its forward leaves the outputs exact and the gradients
wrong. For every class and case of the catalogue, in every mode its forward is verified in (Ulysses 2, ring 2
with both rotations, the 2 x 2 hybrid; with the entry's anything flags), `compare_parallel_backward`
back-propagates a weighted sum of the outputs, sums the gradients over the group (`reduce_gradients` for the
parameters) and compares every parameter and every floating-point input gradient with the single-process ones:
FP32_TOL, relative to max(1, |reference|).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from cp_hooks.verify.catalogue import ENTRIES, get_entry
from cp_hooks.verify.checker import GradientDiff, _gradient_diff, compare_parallel_backward
from cp_testing import FP32_TOL, catalogue_runs, make_config


def verify_gradients(class_name: str, world: int) -> list[str]:
    """Every case of the entry in every mode of `world` ranks it is verified in (the same modes as the forward
    tests); returns one line per (case, mode) with the worst gradients."""
    lines, failures = [], []
    forward_only = get_entry(class_name).forward_only_cases
    for case, mode, model, inputs, config in catalogue_runs(class_name, world):
        if case in forward_only:
            lines.append(f"{class_name} {case} {mode.name}: forward only ({forward_only[case]})")
            continue
        diffs = compare_parallel_backward(model, inputs, config, tol=FP32_TOL)
        params = [d for d in diffs if d.kind == "parameter"]
        assert params, f"{class_name} {case}: no parameter received a gradient; the check would prove nothing"
        worst = {kind: max((d for d in diffs if d.kind == kind), key=lambda d: d.rel, default=None)
                 for kind in ("parameter", "input")}
        lines.append(f"{class_name} {case} {mode.name}: " + ", ".join(
            f"worst {kind} {d.name} rel {d.rel:.2e}" for kind, d in worst.items() if d is not None))
        failures += [f"{class_name} {case} {mode.name} {d.kind} {d.name}: "
                     + (f"no gradient {d.missing}" if d.missing else f"rel {d.rel:.2e}")
                     for d in diffs if not d.passed]
    assert not failures, f"rank {dist.get_rank()}: gradients off by more than {FP32_TOL}:\n" + "\n".join(failures)
    return lines


@pytest.mark.parametrize("class_name", list(ENTRIES))
def test_gradients_match_one_process(pool, class_name):
    results = pool(2).run(verify_gradients, class_name, 2, timeout=300)
    assert results[0] == results[1]  # both ranks compare the same summed gradients


@pytest.mark.parametrize("class_name", [name for name, entry in ENTRIES.items() if entry.hybrid_modes])
def test_gradients_match_one_process_ring_x_ulysses(pool, class_name):
    results = pool(4).run(verify_gradients, class_name, 4, timeout=300)
    assert all(r == results[0] for r in results)


# ----------------------------------------------------------------------------- the check has teeth
def gradients_without_reduction() -> list[str]:
    """The check with `reduce_gradients` left out: each rank keeps its partial gradients, which must FAIL."""
    import cp_hooks.verify.checker as checker

    model, inputs = get_entry("FluxTransformer2DModel").build("t2i")
    reduce = checker.reduce_gradients
    checker.reduce_gradients = lambda model, config: None
    try:
        diffs = compare_parallel_backward(model, inputs, make_config(1, 2))
    finally:
        checker.reduce_gradients = reduce
    assert all(p.grad is None for p in model.parameters()), "the check must leave no gradients behind"
    return sorted(d.name for d in diffs if not d.passed)


def test_partial_gradients_fail(pool):
    failed = pool(2).run(gradients_without_reduction)[0]
    assert "proj_out.weight" in failed and len(failed) > 10, failed


# ----------------------------------------------------------------------------- missing gradients
def test_a_missing_gradient_counts_as_zero():
    like = torch.ones(3)
    assert _gradient_diff("parameter", "w", None, None, like, FP32_TOL) is None
    zero_here = _gradient_diff("parameter", "w", None, torch.zeros(3), like, FP32_TOL)
    assert zero_here.passed and zero_here.missing is None
    lost = _gradient_diff("parameter", "w", None, torch.tensor([0.0, 2.0, 0.0]), like, FP32_TOL)
    assert not lost.passed and lost.missing == "in the parallel run" and lost.max_abs == 2.0
    extra = _gradient_diff("input", "x", torch.tensor([0.0, 0.0, 1e-3]), None, like, FP32_TOL)
    assert not extra.passed and extra.missing == "in the single-process run"
    close = _gradient_diff("input", "x", torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.00001]), like,
                           FP32_TOL)
    assert isinstance(close, GradientDiff) and close.passed and close.rel == pytest.approx(1e-5 / 3, rel=1e-2)

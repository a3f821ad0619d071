"""The benchmark's bookkeeping, on synthetic inputs: profiler attribution and paired statistics.

These decide what the goals table says (cp_hooks' own time, "within noise"), so a regression in them
would misreport every run without failing the end-to-end smoke test.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

measure = pytest.importorskip("measure")
paired = pytest.importorskip("paired")


def span(name, ts, dur, cat="python_function", tid=1):
    return dict(ph="X", name=name, ts=ts, dur=dur, cat=cat, tid=tid)


def test_attribution_charges_callees_to_the_nearest_owner():
    events = [
        span("/x/cp_hooks/hooks.py(86): forward", 0, 100),                 # own 10 (100 - 60 - 30)
        span("/x/diffusers/models/attention.py(1): forward", 5, 60),       # model: own 40
        span("aten::addmm", 10, 20, cat="cpu_op"),                         # inherits model
        span("/x/cp_hooks/attention/ulysses.py(45): ulysses_attention", 70, 30),  # own 30 - 25 = 5 ...
        span("aten::copy_", 71, 4, cat="cpu_op"),                          # ... + a copy it makes: 4
        span("torch/distributed/c10d_logger.py(80): wrapper", 76, 20),     # the collective's wrapper: comm
        span("torch/distributed/distributed_c10d.py(4995): all_to_all_single", 77, 18),
        span("aten::_scaled_dot_product_flash_attention_for_cpu", 96, 1, cat="cpu_op"),
        span("unrelated on another thread", 0, 500, tid=2),
    ]
    totals = measure.attribute_time(events, tid=1)
    assert totals["model"] == pytest.approx(60)
    assert totals["comm"] == pytest.approx(20)
    assert totals["attention"] == pytest.approx(1)
    assert totals["cp_hooks"] == pytest.approx(10 + 5 + 4)
    assert sum(totals.values()) == pytest.approx(100)  # exclusive times add up to the outermost span


def test_asynchronous_spans_that_outlive_their_caller_are_skipped():
    events = [
        span("/x/cp_hooks/attention/ring.py(74): ring_forward", 0, 100),
        span("c10d::send", 10, 200, cat="cpu_op"),  # posted here, runs on past the caller: not nested
        span("aten::_scaled_dot_product_flash_attention_for_cpu", 20, 70, cat="cpu_op"),
    ]
    totals = measure.attribute_time(events, tid=1)
    assert totals == pytest.approx({"cp_hooks": 30, "attention": 70})


def test_router_passthrough_is_cp_hooks_time_but_its_callees_keep_their_owner():
    events = [
        span("/x/diffusers/models/transformer.py(1): forward", 0, 50),
        span("/x/cp_hooks/integration/sdpa.py(40): __torch_function__", 10, 20),
        span("aten::addmm", 12, 15, cat="cpu_op"),
    ]
    totals = measure.attribute_time(events, tid=1)
    assert totals == pytest.approx({"model": 30 + 15, "cp_hooks": 5})


def test_shared_memory_all_to_all_is_communication_not_cp_hooks_time():
    events = [
        span("/x/cp_hooks/comm.py(130): all_to_all", 0, 50),                         # own 50 - 40 = 10
        span("/x/cp_hooks/shared_memory.py(240): all_to_all", 5, 40),                # the transport: comm
        span("aten::copy_", 10, 8, cat="cpu_op"),                                    # its copies too
    ]
    totals = measure.attribute_time(events, tid=1)
    assert totals == pytest.approx({"cp_hooks": 10, "comm": 40})


def test_paired_median_and_interval():
    ours = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0, 97.0, 100.0]
    same = paired.median_interval(paired.paired_ratios(ours, ours))
    assert same == (1.0, 1.0, 1.0)

    slower = [t * 1.10 for t in ours]  # the other variant is 10% slower in every round
    m, lo, hi = paired.median_interval(paired.paired_ratios(slower, ours))
    assert m == pytest.approx(1.10) and lo == pytest.approx(1.10) and hi == pytest.approx(1.10)

    noisy = [1.00, 0.97, 1.02, 0.99, 1.04, 0.96, 1.01, 0.98, 1.03]
    m, lo, hi = paired.median_interval(noisy)
    assert lo < m < hi and lo <= 0.99 and hi >= 1.01
    assert paired.median_interval(noisy) == (m, lo, hi)  # deterministic: reports regenerate identically


def test_verdicts():
    assert paired.verdict(1.02, 1.05, 1.0) == "yes"
    assert paired.verdict(0.98, 1.01, 1.0) == "within noise"
    assert paired.verdict(0.90, 0.97, 1.0) == "no"
    with pytest.raises(ValueError):
        paired.median_interval([])

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
report = pytest.importorskip("report")


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


def _record(workload, variant, time_ms, world=2, **kw):
    return dict(suite="model", workload=workload, tokens=4160, variant=variant, status="ok", world=world,
                time_ms=time_ms, time_ms_rounds=[time_ms] * 3, kind="cp_hooks" if variant != "single" else "single",
                **kw)


def test_compiled_variants_are_compared_with_the_compiled_single_process():
    records = [_record("flux-4k", "single", 700.0), _record("flux-4k", "ulysses", 350.0),
               _record("flux-4k", "single-compiled", 600.0, compile_backend="inductor", first_call_ms=40600.0),
               _record("flux-4k", "ulysses-compiled", 320.0, compile_backend="inductor", first_call_ms=20320.0)]
    report.annotate(records, dict(device="cpu", world=2, threads_per_rank=1, cores=2, usable_cores=2))
    by = {r["variant"]: r for r in records}
    assert by["ulysses"]["speedup"] == pytest.approx(2.0)
    assert by["ulysses-compiled"]["speedup"] == pytest.approx(600 / 320)  # not 700 / 320
    assert "speedup" not in by["single-compiled"]
    assert by["single-compiled"]["compile_s"] == pytest.approx(40.0)  # first call less a steady one
    assert by["ulysses-compiled"]["compile_s"] == pytest.approx(20.0)


def test_oversubscribed_runs_report_no_speed_up():
    meta = dict(device="cpu", world=4, threads_per_rank=1, cores=2, usable_cores=2)
    assert report.oversubscribed(meta)
    assert not report.oversubscribed(dict(meta, world=2))
    assert not report.oversubscribed(dict(meta, usable_cores=None, cores=8))
    assert not report.oversubscribed(dict(meta, device="cuda"))  # GPU ranks do not share CPU cores for compute
    records = [_record("attn-4k", "single", 472.0, world=4, peak_memory_bytes=2**20),
               _record("attn-4k", "ulysses", 124.0, world=4, peak_memory_bytes=2**20, speedup=3.8, efficiency=0.95)]
    report.annotate(records, meta)  # an older file's stored speed-up is dropped, not shown
    assert all("speedup" not in r and "efficiency" not in r for r in records)
    head = report.table(records, times=False)[0]
    assert "time / forward" not in head and "speed-up" not in head and "peak mem" in head


def test_compile_counters_count_graphs_and_breaks():
    import torch

    def broken(x):
        x = x + 1
        print(end="")  # dynamo cannot trace print: a graph break, two graphs
        return x * 2

    before = measure.compile_counters()
    torch.compile(broken, backend="eager")(torch.ones(3))
    got = measure.compile_counters_since(before)
    assert got["graphs"] == 2 and got["graph_breaks"] == 1 and sum(got["break_reasons"].values()) == 1


def test_python_tracer_feeds_the_attribution():
    """The own-time tracer's spans nest like the profiler's and classify the same way."""
    import torch

    from cp_hooks.attention.local import attention_with_lse
    from pytrace import PythonTracer, main_thread_id

    q = torch.randn(1, 2, 256, 16)
    tracer = PythonTracer()
    tracer.start()
    attention_with_lse(q, q, q)  # cp_hooks Python around the CPU flash-attention operator
    tracer.stop()
    events = tracer.events()
    names = [e["name"] for e in events]
    assert any(n.endswith(": attention_with_lse") and "cp_hooks/attention/local.py" in n for n in names)
    assert any(e["cat"] == "cpu_op" and "flash_attention" in e["name"] for e in events), names
    assert not any(n.endswith(": test_python_tracer_feeds_the_attribution") for n in names)  # started inside it
    totals = measure.attribute_time(events, main_thread_id())
    assert totals["attention"] > 0 and totals["cp_hooks"] > 0
    wall = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
    assert sum(totals.values()) == pytest.approx(wall, rel=0.05)  # every microsecond charged exactly once

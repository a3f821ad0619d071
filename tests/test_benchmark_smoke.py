"""The benchmark script runs end to end at toy sizes and writes consistent records (no timing is checked).

The compiled variants run with backend "eager": dynamo traces and counts graphs exactly as with inductor, but
without inductor's C++ code generation, which takes 15-40 s per graph on two cores (the benchmark itself
compiles with inductor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_runs_and_reports(tmp_path):
    pytest.importorskip("diffusers")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "benchmarks", "run.py"), "--models", "flux-256,wan", "--wan-shape", "2x8x8",
           "--attn-lengths", "128", "--overhead-tokens", "320", "--repeats", "1", "--min-seconds", "1000",
           "--max-rounds", "2", "--out", str(tmp_path),
           "--tag", "smoke", "--compile", "flux-256", "--compile-backend", "eager",
           "--suites", "models,attention,cfg", "--cfg-tokens", "64"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    records = json.load(open(tmp_path / "smoke.json"))["records"]
    by = {(r["workload"], r["variant"]): r for r in records}
    for workload in ("flux-256", "wan-2x8x8", "attn-128"):
        for variant in ("ulysses", "ulysses-gloo", "ring-allgather", "ring-alltoall"):
            r = by[(workload, variant)]
            assert r["status"] == "ok"
            assert r["bytes_vs_formula"] == pytest.approx(1.0), (workload, variant)  # even shards: exact
            assert r["rel_diff"] <= 1e-5, (workload, variant)
            assert r["peak_memory_bytes"] > 0 and r["speedup"] > 0
            assert len(r["time_ms_rounds"]) == 2  # --min-seconds added rounds up to --max-rounds
    assert by[("flux-256", "ulysses")]["overhead_share"] is not None
    # The comparison variant really ran over gloo; the default one says how its all-to-alls travelled.
    assert by[("flux-256", "ulysses-gloo")]["transport"] == "gloo (kept for comparison)"
    assert by[("flux-256", "ulysses")]["transport"].startswith(("shared memory", "gloo ("))
    assert by[("flux-256", "diffusers-ulysses")]["status"] == "ok"
    assert by[("flux-256", "diffusers-ring")]["status"] in ("ok", "failed")  # fails on CPU: recorded, not raised
    # Compiled variants: their own copies, compiled in the same launch and timed in the same rounds.
    for variant in ("single-compiled", "ulysses-compiled", "ring-allgather-compiled", "ring-alltoall-compiled",
                    "diffusers-ulysses-compiled"):
        r = by[("flux-256", variant)]
        assert r["status"] == "ok", (variant, r.get("error"))
        assert r["compile_backend"] == "eager" and len(r["time_ms_rounds"]) == 2
        assert r["graphs"] >= 1 and r["graphs_per_forward"] >= 1 and r["first_call_ms"] > 0
        assert r["rel_diff"] <= 1e-5, variant
        if r["kind"] == "cp_hooks":  # an enabled model traces whole: no break, nothing compiled after warm-up
            assert r["graph_breaks"] == 0 and r["recompiled_after_first_call"] == 0, variant
            assert r["bytes_vs_formula"] == pytest.approx(1.0), variant
    assert by[("flux-256", "ulysses-compiled")]["speedup"] > 0  # against single-compiled
    assert ("wan-2x8x8", "single-compiled") not in by  # --compile named flux-256 only
    # Classifier-free guidance over the two ranks as cfg groups, batched and sequential, equal to one process.
    for variant in ("cfg-batched", "cfg-sequential"):
        r = by[("flux-64", variant)]
        assert r["status"] == "ok" and r["max_abs_diff"] <= 1e-5, variant
        assert len(r["time_ms_rounds"]) == len(r["single_time_ms_rounds"]) >= 11
    report = (tmp_path / "results.md").read_text()
    assert "| flux-256 |" in report and "## Goals" in report
    assert "classifier-free guidance over cfg groups" in report and "| cfg-sequential | 64 |" in report
    assert "Where the time of one traced forward goes" in report
    assert "What torch.compile made of each compiled variant" in report

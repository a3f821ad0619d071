"""Measurements: time per forward, bytes sent, peak memory, what torch.compile compiled, and the time spent
in cp_hooks' own code.

All functions run on every rank (most contain collectives) and return per-rank numbers; run.py reduces
them over ranks.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from pytrace import PythonTracer, main_thread_id


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[object, float]:
    """Run `fn()` after a barrier (all ranks start together); returns (result, seconds on this rank)."""
    sync(device)
    dist.barrier()
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def max_over_ranks(value: float, device) -> float:
    """A forward is as slow as its slowest rank."""
    t = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


# ---------------------------------------------------------------------------------------------- compile
def compile_counters() -> tuple[int, dict]:
    """dynamo's running totals: graphs compiled so far, and graph breaks by reason."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], dict(counters["graph_break"])


def compile_counters_since(before: tuple[int, dict]) -> dict:
    """What dynamo compiled since `before` (from `compile_counters`): graphs, graph breaks and their reasons.

    A model that compiles whole is one graph and no break; each break ends a graph and starts another after
    the Python that dynamo could not trace, which then runs eagerly between compiled graphs.
    """
    graphs, breaks = compile_counters()
    reasons: dict[str, int] = {}
    for reason, n in breaks.items():
        if n > before[1].get(reason, 0):
            key = reason[:200]  # dynamo's reasons can run to a stack trace
            reasons[key] = reasons.get(key, 0) + n - before[1].get(reason, 0)
    return dict(graphs=graphs - before[0], graph_breaks=sum(reasons.values()), break_reasons=reasons)


def compiled_regions(fn) -> int:
    """How many compiled graphs one call of `fn()` runs: the profiler's "Torch-Compiled Region" events.

    dynamo's counters say what was compiled, not what runs: a top-level module's hooks are frames of their
    own beside its forward, and a graph compiled once can be left for another (see run.py's second warm-up
    call). Counted the same whatever the backend.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("Torch-Compiled Region"))


# ----------------------------------------------------------------------------------------------- memory
def peak_memory(fn, device, calls: int = 3) -> tuple[object, int]:
    """(result, peak bytes allocated by `fn()` above what was allocated when it started), this rank.

    CUDA: the caching allocator's peak. CPU: the profiler's allocation events (every CPU tensor allocation
    and free while profiling, with a running total), so the peak is allocator-exact and free of RSS noise
    (glibc keeping freed pages, other processes); the least of `calls` calls, because gloo's worker thread
    sometimes drops a send buffer's last reference only after the next allocation, which adds a buffer to
    that one call's peak. Memory allocated outside torch's allocator (gloo's own buffers) is not seen on
    either device.
    """
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        sync(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    peaks = []
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
        events = sorted((e for e in _trace_events(prof) if e.get("name") == "[memory]"
                         and e.get("args", {}).get("Device Type", 0) == 0), key=lambda e: e["ts"])
        if not events:
            peaks.append(0)
            continue
        # "Total Allocated" is a running sum that carries over between profiling sessions (tensors that outlive
        # one, freed while nothing profiles, are never subtracted): measure from the value before the first event.
        start = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
        peaks.append(max(0, max(e["args"]["Total Allocated"] for e in events) - start))
    return out, min(peaks)


def _trace_events(prof) -> list[dict]:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            return json.load(f)["traceEvents"]
    finally:
        os.remove(path)


# --------------------------------------------------------------------------------------------- overhead
_COLLECTIVES = re.compile(r"torch/distributed/.*\): (all_to_all_single|all_gather_into_tensor|all_gather_single|"
                          r"all_gather|batch_isend_irecv|isend|irecv|send|recv|all_reduce|barrier|broadcast)$")


# cp_hooks' SDPA router is a TorchFunctionMode: every torch call of the model passes through its
# `__torch_function__`. Its own time is cp_hooks'; what it calls belongs to whoever called the torch function.
PASSTHROUGH = "passthrough"


def classify(event: dict) -> str | None:
    """Who owns an event's time: "cp_hooks", "model", "attention", "comm", or None (its caller's owner).

    Model layers are diffusers' and torch.nn's Python code (a hook calls the original forward, so they
    run inside cp_hooks frames); attention kernels are the SDPA/flash ops; collectives are torch.distributed's
    collective calls (with the logging wrapper torch puts around each), c10d/gloo/nccl ops, waiting on their
    work objects, and cp_hooks' shared-memory all-to-all (its copies and waits stand in for gloo's).
    Everything else that runs below a cp_hooks frame — its Python, hook dispatch, reshapes and copies, the
    LSE merge — is cp_hooks' own.
    """
    name, cat = event.get("name", ""), event.get("cat", "")
    if cat == "python_function":
        if "cp_hooks/" in name and name.endswith("__torch_function__"):
            return PASSTHROUGH
        if "cp_hooks/shared_memory.py" in name:
            return "comm"  # the shared-memory all-to-all is a collective's implementation, as gloo's C++ is
        if "cp_hooks/" in name and "benchmarks/" not in name:
            return "cp_hooks"
        if "diffusers/" in name or "torch/nn/modules/" in name or "torch/nn/functional.py" in name:
            return "model"
        if (_COLLECTIVES.search(name) or "torch/distributed/c10d_logger.py" in name
                or re.search(r"built-in method (wait|wait_tensor)\b", name)):
            return "comm"
        return None
    if cat in ("cpu_op", "user_annotation"):
        if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
            return "attention"
        if name.startswith(("c10d::", "c10d_functional::", "_c10d_functional::", "gloo:", "nccl:",
                            "record_param_comms")):
            return "comm"
    return None


def attribute_time(events: list[dict], tid) -> dict[str, float]:
    """Exclusive time (microseconds) of one thread's events, attributed to the nearest classified owner."""
    spans = sorted((e for e in events if e.get("ph") == "X" and e.get("tid") == tid and "dur" in e),
                   key=lambda e: (e["ts"], -e["dur"]))
    totals: dict[str, float] = {}
    stack: list[tuple[float, str, str]] = []  # (end, owner of its own time, owner of its callees)

    def close_until(ts):
        while stack and stack[-1][0] <= ts + 1e-3:
            stack.pop()

    for e in spans:
        close_until(e["ts"])
        if stack and e["ts"] + e["dur"] > stack[-1][0] + 1e-3:
            # Not nested in the enclosing span: an asynchronous op (a ring's c10d::send/recv) whose span runs
            # on past the call that posted it, over the compute that follows. Nesting it would charge that
            # compute to the wrong owner; the time spent waiting for it is the Work.wait() call, counted as comm.
            continue
        parent_time_owner = stack[-1][1] if stack else "other"  # who is charged for the parent's own time
        inherited = stack[-1][2] if stack else "other"  # who owns what the parent calls
        kind = classify(e)
        owner, passes_on = (("cp_hooks", inherited) if kind == PASSTHROUGH else (kind or inherited, kind or inherited))
        if stack:
            totals[parent_time_owner] = totals.get(parent_time_owner, 0.0) - e["dur"]  # not the parent's own time
        totals[owner] = totals.get(owner, 0.0) + e["dur"]
        stack.append((e["ts"] + e["dur"], owner, passes_on))
    return totals


def framework_overhead(fn, device, repeats: int = 3) -> dict:
    """Trace `repeats` calls of `fn()` (every Python and builtin call of this thread, `pytrace.PythonTracer`);
    split each call's time by owner (see `classify`).

    Returns the median over the calls of each owner's seconds and of cp_hooks' share of the forward (one
    traced call varies by a fraction of a percent on a shared machine, as much as the share itself).
    The tracer slows every Python call, cp_hooks' and the model's alike, more than it slows kernels, so the
    share measured here is an upper bound on the share in an untraced forward. (torch's profiler with
    `with_stack=True` gave the same split but once crashed a rank on a CI machine; see pytrace.py.)
    On GPUs the kernels run asynchronously: the tracer sees the launches and the synchronising waits.
    """
    calls = []
    for _ in range(repeats):
        sync(device)
        dist.barrier()
        tracer = PythonTracer()
        tracer.start()
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
        tracer.stop()
        totals = attribute_time(tracer.events(), main_thread_id())
        calls.append((wall, {k: max(v, 0.0) / 1e6 for k, v in totals.items()}))
    owners = sorted({k for _, seconds in calls for k in seconds})
    by_owner = {k: statistics.median(seconds.get(k, 0.0) for _, seconds in calls) for k in owners}
    shares = [seconds.get("cp_hooks", 0.0) / wall for wall, seconds in calls if wall]
    return dict(profiled_forward_s=statistics.median(wall for wall, _ in calls), by_owner_s=by_owner,
                cp_hooks_s=by_owner.get("cp_hooks", 0.0), share=statistics.median(shares) if shares else None,
                shares=shares)

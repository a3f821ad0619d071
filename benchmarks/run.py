"""Benchmark cp_hooks against one process and against diffusers' own context parallelism, in one launch.

    torchrun --nproc_per_node 2 benchmarks/run.py                       # CPU: gloo, 1 thread per rank
    accelerate launch --multi_gpu --num_processes 2 benchmarks/run.py   # the same through accelerate
    torchrun --nproc_per_node 4 benchmarks/run.py --suites attention --attn-lengths 16384 --tag cpu-4ranks-memory
    torchrun --nproc_per_node 1 benchmarks/run.py --suites split        # one GPU: cost of splitting attention
    torchrun --nproc_per_node 2 benchmarks/run.py --models flux-4k --compile   # + torch.compile'd variants
    torchrun --nproc_per_node 2 benchmarks/run.py --suites cfg --tag cpu-2ranks-cfg   # classifier-free guidance
    bash benchmarks/run_all.sh                                          # everything in benchmarks/README.md

For every workload (tiny-config Flux at 1k/4k/16k image tokens, a Wan video shape, bare attention at several
lengths, any `--model`) the variants — one process, every cp_hooks mode that fits the world, diffusers'
`enable_parallelism` — are timed in alternating rounds so that machine drift falls on all of them alike.
With --compile, each of them (but ulysses-gloo and diffusers' ring) also runs compiled, on its own copy of the
model, in the same rounds; the record adds dynamo's graph and graph-break counts and the compile time.
Each record has: median time per forward (slowest rank), speed-up over one process and parallel efficiency
(speed-up / N), bytes sent per rank against the formula of docs/architecture.md, peak memory per rank above the
inputs, the max difference from the one-process output, and (at --overhead-tokens) the share of cp_hooks' own code.
Rank 0 writes results/<tag>.json and regenerates the Markdown, plots and README sections (report.py).
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import os
import platform
import shutil
import statistics
import sys
import tempfile
import traceback

import torch
import torch._dynamo
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402
from cfg_steps import bench_cfg  # noqa: E402
from cp_hooks import comm_stats, context_parallel_attention, init_distributed, shutdown_distributed  # noqa: E402
from cp_hooks.forward.sharding import take_shard  # noqa: E402
from split_attention import split_efficiency  # noqa: E402
from variants import Mode, Runner, compiled_modes, cp_modes, diffusers_modes  # noqa: E402

DEFAULT_MODELS = "flux-1k,flux-4k,flux-16k,wan"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", default=None,
                   help="comma list of models, attention, split, cfg (default: models,attention; split on one rank)")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma list of flux-<N>k and wan")
    p.add_argument("--model", action="append", default=[], help="extra model: module:function or file.py:function")
    p.add_argument("--attn-lengths", default="1024,4096,16384", help="attention-only sequence lengths")
    p.add_argument("--split-lengths", default="4096,16384,32768", help="split suite lengths")
    p.add_argument("--cfg-tokens", type=int, default=4096, help="image tokens of the cfg suite's Flux step")
    p.add_argument("--flux-layers", type=int, default=1, help="double- and single-stream blocks, each")
    p.add_argument("--wan-shape", default="16x32x32", help="latent frames x height x width")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported), after one warm-up")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="add rounds until a workload's timed total reaches this (short workloads get more rounds)")
    p.add_argument("--max-rounds", type=int, default=31, help="cap on the rounds --min-seconds adds")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank (the one-process run gets the same)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    p.add_argument("--overhead-tokens", type=int, default=4096, help="profile cp_hooks' own time at this size")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' enable_parallelism")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--compile", nargs="?", const="all", default=None, metavar="MODELS",
                   help="also time every variant under torch.compile: for every model workload, or for the comma "
                        "list of --models entries given (e.g. flux-4k,flux-16k)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled variants")
    p.add_argument("--compile-cache", choices=("fresh", "default"), default="fresh",
                   help="fresh: an empty inductor cache directory per rank for this launch, so that compile times "
                        "are cold ones; default: torch's own directory (then they depend on earlier runs)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--tag", default=None, help="results/<tag>.json (default: <device>-<N>ranks)")
    p.add_argument("--no-report", action="store_true", help="write the JSON only")
    p.add_argument("--readme", action="store_true", help="also rewrite the README result sections")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    faulthandler.enable()  # a rank killed by a signal prints its Python stack (torchrun shows only the signal)
    # Before anything compiles: inductor reads its cache directory from the environment.
    cache = fresh_inductor_cache() if args.compile and args.compile_cache == "fresh" else None
    device = init_distributed()
    world, rank = dist.get_world_size(), dist.get_rank()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("float32" if device.type == "cpu" else "bfloat16"))
    suites = (args.suites or ("models,attention" if world > 1 else "split")).split(",")
    meta = machine(args, device, dtype, world)
    records: list[dict] = []

    def add(new):
        records.extend(new)
        if rank == 0:
            for r in new:
                print(report.one_line(r), flush=True)

    if "models" in suites:
        specs = [m for m in args.models.split(",") if m] + [f"custom:{m}" for m in args.model]
        for spec in specs:
            w = build(spec, args, device, dtype)
            add(bench_model(w, args, device, world, compile_it=wants_compile(args, spec, w)))
    if "attention" in suites and world > 1:
        for length in (int(x) for x in args.attn_lengths.split(",") if x):
            add(bench_attention(workloads.attention(length, device, dtype, heads=args.heads, head_dim=args.head_dim),
                                args, device, world))
    if "cfg" in suites and world > 1:
        rounds = max(args.repeats, 11)  # paired ratios of a 2-way split: enough rounds for an interval
        add(bench_cfg(args.cfg_tokens, rounds, device, world))
    if "split" in suites and rank == 0:
        add(split_efficiency([int(x) for x in args.split_lengths.split(",")], [2, 4, 8], device, dtype,
                             heads=args.heads, head_dim=args.head_dim, repeats=max(args.repeats, 3)))
    meta["load_average_end"] = os.getloadavg()
    if rank == 0:
        tag = args.tag or f"{device.type}-{world}ranks"
        path = report.write_json(args.out, tag, meta, records)
        print(f"wrote {path}")
        if not args.no_report:
            report.generate(args.out, readme=args.readme)
    shutdown_distributed()
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


def wants_compile(args, spec: str, w: workloads.Workload) -> bool:
    """--compile alone compiles every model workload; with a list, those named (as in --models, or by name)."""
    if not args.compile or w.model is None:
        return False
    chosen = args.compile.split(",")
    return "all" in chosen or spec in chosen or w.name in chosen


def fresh_inductor_cache() -> str:
    """Point inductor at a new, empty cache directory (one per rank) and return it.

    With torch's default directory, a second run finds the first one's kernels and its "compile time" is a
    cache lookup; one empty directory per rank gives every launch the same cold compile, the one a new
    deployment pays. (Within the launch, a kernel two variants share is compiled once, as it would be.)
    """
    path = tempfile.mkdtemp(prefix="cp_hooks_bench_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return path


def build(spec: str, args, device, dtype) -> workloads.Workload:
    kw = dict(heads=args.heads, head_dim=args.head_dim)
    if spec.startswith("flux-"):
        size = spec.split("-", 1)[1]
        tokens = int(size[:-1]) * 1024 if size.endswith("k") else int(size)
        return workloads.flux(tokens, device, dtype, layers=args.flux_layers, **kw)
    if spec == "wan":
        f, h, w = (int(x) for x in args.wan_shape.split("x"))
        return workloads.wan(f, h, w, device, dtype, **kw)
    if spec.startswith("custom:"):
        return workloads.custom(spec.split(":", 1)[1], device, dtype)
    raise ValueError(f"unknown model {spec!r}; use flux-<N>k, flux-<N>, wan, or --model module:function")


def machine(args, device, dtype, world) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=os.environ.get("BENCH_COMMAND") or f"<launcher> --nproc {world} " + " ".join(sys.argv),
        world=world, device=device.type, dtype=str(dtype).replace("torch.", ""), threads_per_rank=args.threads,
        cpu=cpu, cores=os.cpu_count(), usable_cores=_usable_cores(), memory_gib=_memory_gib(),
        platform=platform.platform(),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        torch=torch.__version__, diffusers=_version("diffusers"), python=platform.python_version(),
        backend=dist.get_backend(), load_average_start=os.getloadavg(), repeats=args.repeats,
        min_seconds=args.min_seconds, max_rounds=args.max_rounds,
        compile=args.compile, compile_backend=args.compile_backend if args.compile else None,
        compile_cache=args.compile_cache if args.compile else None,
    )


def _usable_cores():
    # The cores this process may run on (a container or taskset can allow fewer than os.cpu_count()).
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _memory_gib():
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def _version(name):
    try:
        return __import__(name).__version__
    except ImportError:
        return None


# -------------------------------------------------------------------------------------------- variants
def bench_model(w: workloads.Workload, args, device, world, compile_it=False) -> list[dict]:
    modes = [Mode("single", "single")] + cp_modes(world, w.heads or 1, device.type)
    if not args.no_diffusers and getattr(w.model, "_cp_plan", None) and hasattr(w.model, "enable_parallelism"):
        modes += diffusers_modes(world, w.heads or 1)
    if compile_it:
        modes += compiled_modes(modes, device.type, args.compile_backend)
    runner = Runner(w.model, modes)

    def forward(mode):
        def run():
            with torch.no_grad():
                return runner.model_for(mode)(**w.inputs)[0]
        return run

    return bench(w, modes, runner, forward, args, device, world)


def bench_attention(w: workloads.Workload, args, device, world) -> list[dict]:
    modes = [Mode("single", "single")] + cp_modes(world, w.heads, device.type)
    runner = Runner(torch.nn.Identity(), [])
    full = w.inputs
    rank = dist.get_rank()
    local = {k: take_shard(v, 1, rank, world).contiguous() for k, v in full.items()}

    def forward(mode):
        if mode.kind == "single":
            def run():
                q, k, v = (full[n].transpose(1, 2) for n in "qkv")
                return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        else:
            def run():
                return context_parallel_attention(local["q"], local["k"], local["v"], config=mode.config)
        return run

    # enter/exit are no-ops here: the mode's config is passed directly.
    runner.enter = lambda mode: None
    runner.exit = lambda mode: None
    return bench(w, modes, runner, forward, args, device, world, gather_dim=1)


def bench(w, modes, runner, forward, args, device, world, gather_dim=None) -> list[dict]:
    """Warm up (compiling the compiled variants), time alternating rounds, then memory, overhead and error passes;
    returns one record per mode."""
    failed = dict(runner.failed)
    outputs, times, sent = {}, {m.name: [] for m in modes}, {}
    live = [m for m in modes if m.name not in failed]
    compiled = {}  # compiled variant -> what its first call compiled, and how long it took

    def warm_up(m) -> None:
        """The first call: the output used for the error measure. A failure is the same on every rank.
        A compiled variant compiles here: the call is timed, and dynamo's counters are read around it."""
        try:
            runner.enter(m)
            if m.compiled:
                before = measure.compile_counters()
                outputs[m.name], first = measure.timed(m.wrap(forward(m)), device)
                compiled[m.name] = dict(measure.compile_counters_since(before), recompiled_after_first_call=0,
                                        first_call_s=measure.max_over_ranks(first, device))
            else:
                outputs[m.name] = m.wrap(forward(m))()
        except Exception as e:
            failed[m.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            live.remove(m)
            dist.barrier()
        finally:
            runner.exit(m)

    def call_compiled_again() -> None:
        """A second, untimed call of every compiled variant; what it compiles is counted.

        The variants share code objects (the model class's forward, torch.nn's call path) and dynamo's state
        on them is per process: a variant whose compile gives up on a function ("falling back to eager")
        makes the others' next call compile again, without that function. That compile happens here, not in
        a timed round."""
        for m in live:
            if m.compiled:
                before = measure.compile_counters()
                m.wrap(forward(m))()
                compiled[m.name]["recompiled_after_first_call"] += measure.compile_counters_since(before)["graphs"]

    for m in list(live):
        warm_up(m)
    call_compiled_again()

    # A compiled variant with graph breaks that made the others compile again would leave them timed in a form
    # they do not have on their own (diffusers' Ulysses on Wan does this). It is dropped, with its counts and
    # the reason, and the others are compiled again from a clean dynamo state. Decided on every rank alike.
    breakers = [m for m in live if m.compiled and measure.max_over_ranks(compiled[m.name]["graph_breaks"], device)]
    disturbed = measure.max_over_ranks(sum(compiled[m.name]["recompiled_after_first_call"] for m in live
                                           if m.compiled and m not in breakers), device)
    if breakers and disturbed:
        for m in breakers:
            failed[m.name] = (f"not timed: its compile fell back to eager around {compiled[m.name]['graph_breaks']} "
                              "graph break(s), which made the other compiled variants of this launch compile again "
                              "in pieces; they were compiled anew (dynamo reset) without this variant")
            live.remove(m)
        torch._dynamo.reset()
        for m in [m for m in live if m.compiled]:
            warm_up(m)
        call_compiled_again()

    r, elapsed = 0, 0.0
    # At least --repeats rounds; more while the workload's timed total is under --min-seconds (the same
    # decision on every rank: `elapsed` sums values already reduced over ranks).
    while live and (r < args.repeats or (elapsed < args.min_seconds and r < args.max_rounds)):
        order = live[r % len(live):] + live[: r % len(live)]  # rotate: nobody is always first after a pause
        for m in order:
            runner.enter(m)
            before = measure.compile_counters() if m.compiled else None  # read outside the timed call
            with comm_stats() as stats:
                _, seconds = measure.timed(m.wrap(forward(m)), device)
            if m.compiled:  # a guard that fails after the warm-up would put a compile into the timed rounds
                compiled[m.name]["recompiled_after_first_call"] += measure.compile_counters_since(before)["graphs"]
            runner.exit(m)
            times[m.name].append(measure.max_over_ranks(seconds, device))
            elapsed += times[m.name][-1]
            sent.setdefault(m.name, []).append(stats.as_dict())
        r += 1

    memory = {}
    if not args.no_memory:
        for m in live:
            runner.enter(m)
            dist.barrier()
            _, memory[m.name] = measure.peak_memory(m.wrap(forward(m)), device)
            runner.exit(m)

    for m in live:
        if m.compiled:  # what runs in a steady forward: one graph per compiled frame, eager Python between them
            compiled[m.name]["graphs_per_forward"] = measure.compiled_regions(m.wrap(forward(m)))

    overhead = {}
    if w.tokens and abs(w.tokens - args.overhead_tokens) <= 128 and w.family != "attention":
        for m in live:
            if m.kind == "cp_hooks" and not m.compiled:  # compiled code has no Python frames to attribute
                runner.enter(m)
                overhead[m.name] = measure.framework_overhead(m.wrap(forward(m)), device)
                runner.exit(m)

    reference = outputs.get("single")
    records = []
    for m in modes:
        rec = dict(suite="attention" if w.family == "attention" else "model", workload=w.name, family=w.family,
                   tokens=w.tokens, description=w.description, world=world, variant=m.name, kind=m.kind,
                   label=m.label, ring=m.ring, ulysses=m.ulysses, rotate_method=m.rotate_method if m.ring > 1 else None,
                   compile_backend=m.compile_backend, eager_variant=m.eager_name)
        if m.name in failed:
            rec["status"] = "failed"
            rec["error"] = failed[m.name]
            # A compiled variant dropped for its graph breaks still reports what its compile made.
            records.append(gather_rank_values(rec, {"compile": compiled[m.name]} if m.name in compiled else {}))
            continue
        rec["status"] = "ok"
        rec.update(m.transport_used())
        rec["time_ms"] = statistics.median(times[m.name]) * 1e3
        rec["time_ms_rounds"] = [t * 1e3 for t in times[m.name]]
        per_rank = {}
        if m.name in sent and m.kind == "cp_hooks":  # diffusers' collectives do not pass through comm_stats
            per_forward = [s["payload_sent"] for s in sent[m.name]]
            per_rank["attention_bytes_sent"] = statistics.mean(p.get("attention", 0) for p in per_forward)
            per_rank["all_bytes_sent"] = statistics.mean(sum(p.values()) for p in per_forward)
            per_rank["calls"] = sent[m.name][-1]["calls"]
        if m.name in memory:
            per_rank["peak_memory_bytes"] = memory[m.name]
        if m.name in overhead:
            per_rank["overhead"] = overhead[m.name]
        if m.name in compiled:  # (compiled here, after a variant with graph breaks was dropped, if one was)
            rec["first_call_ms"] = compiled[m.name]["first_call_s"] * 1e3  # already the slowest rank's
            per_rank["compile"] = {k: v for k, v in compiled[m.name].items() if k != "first_call_s"}
        if reference is not None and m.name != "single":
            out, ref = outputs[m.name].float(), reference.float()
            diff = (out - ref).abs().max().item() if gather_dim is None else _sharded_diff(out, ref, world)
            per_rank["max_abs_diff"] = diff
            per_rank["ref_scale"] = max(1.0, ref.abs().max().item())
        if w.attn_calls and m.kind != "single":
            e = torch.empty((), dtype=next(iter(t for t in w.inputs.values() if torch.is_tensor(t)
                                                and t.is_floating_point())).dtype).element_size()
            rec["formula_bytes"] = sum(formula(w.batch, length, hidden, e, m.ring, m.ulysses)
                                       for length, hidden in w.attn_calls)
        records.append(gather_rank_values(rec, per_rank))
    return records


def _sharded_diff(local_out, full_ref, world):
    ref = take_shard(full_ref, 1, dist.get_rank(), world)
    return (local_out - ref).abs().max().item()


def formula(batch, length, hidden, e, ring, ulysses) -> float:
    """docs/architecture.md: Ulysses 4·bLde·(u−1)/(N·u) + ring 2·bLde·(r−1)/N per attention call, per rank."""
    n, blde = ring * ulysses, batch * length * hidden * e
    return 4 * blde * (ulysses - 1) / (n * ulysses) + 2 * blde * (ring - 1) / n


def gather_rank_values(rec: dict, per_rank: dict) -> dict:
    """Attach every rank's values (lists indexed by rank) and their summaries to the record."""
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, per_rank)
    if not per_rank:
        return rec
    for key in ("attention_bytes_sent", "all_bytes_sent", "peak_memory_bytes", "max_abs_diff"):
        if key in per_rank:
            rec[f"{key}_per_rank"] = [r[key] for r in everyone]
    if "calls" in per_rank:
        rec["calls_rank0"] = everyone[0]["calls"]
    if "max_abs_diff" in per_rank:
        rec["max_abs_diff"] = max(r["max_abs_diff"] for r in everyone)
        rec["rel_diff"] = rec["max_abs_diff"] / max(r["ref_scale"] for r in everyone)
    if "peak_memory_bytes" in per_rank:
        rec["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in everyone)
    if "overhead" in per_rank:
        rec["overhead_per_rank"] = [r["overhead"] for r in everyone]
        rec["overhead_share"] = max(r["overhead"]["share"] for r in everyone)
        rec["overhead_tracer"] = "pytrace"  # records without it were measured with torch.profiler(with_stack=True)
    if "compile" in per_rank:
        rec["compile_per_rank"] = [r["compile"] for r in everyone]
        for key in ("graphs", "graph_breaks", "recompiled_after_first_call", "graphs_per_forward"):  # the worst rank's
            if key in per_rank["compile"]:
                rec[key] = max(r["compile"][key] for r in everyone)
        rec["break_reasons"] = per_rank["compile"]["break_reasons"]
    return rec


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except Exception:
        traceback.print_exc()
        raise

"""Turn benchmark records into JSON, a Markdown report, PNG plots and the README result sections.

    python benchmarks/report.py [--readme]     # regenerate everything from benchmarks/results/*.json

Every number in the Markdown and the READMEs comes from the JSON files; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics

from paired import median_interval, paired_ratios, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOAL_EFFICIENCY, GOAL_BYTES, GOAL_MEMORY, GOAL_OVERHEAD = 0.95, 0.01, 0.6, 0.02
GOAL_CFG = 0.97  # cfg groups exchange only the outputs (issue #16)


# ------------------------------------------------------------------------------------------------ json
def oversubscribed(meta: dict) -> bool:
    """True when a CPU launch's ranks (times their threads) outnumber the cores it could use.

    Then the ranks share cores: every rank runs the one-process baseline at the same time, each on a fraction
    of a core, so the baseline is measured that much too slow, and speed-ups beyond the core count appear
    (3.8x with 4 ranks on 2 cores). Such a run reports bytes and memory only.
    """
    if meta.get("device") != "cpu":
        return False
    cores = meta.get("usable_cores") or meta.get("cores")
    return bool(cores) and meta["world"] * meta.get("threads_per_rank", 1) > cores


def baseline_name(r: dict) -> str:
    """The one-process variant a record's speed-up is against: compiled variants against the compiled one."""
    return "single-compiled" if r.get("compile_backend") else "single"


def annotate(records: list[dict], meta: dict | None = None) -> list[dict]:
    """Add speed-up and efficiency (against the one-process record of the same workload, compiled or not as the
    record is; none where the run is oversubscribed), compile time, and byte ratios."""
    times_mean_something = not oversubscribed(meta or {})
    single = {(r["workload"], r["variant"]): r for r in records
              if r.get("variant") in ("single", "single-compiled") and r.get("status") == "ok"}
    for r in records:
        if r.get("suite") in ("split", "cfg"):
            continue  # their efficiencies are their suites' own (split_attention.py, cfg_steps.py)
        for key in ("speedup", "efficiency", "single_time_ms", "single_peak_memory_bytes", "compile_s"):
            r.pop(key, None)  # recomputed below (older files stored them, and the rules may have changed)
        base = single.get((r.get("workload"), baseline_name(r)))
        if r.get("status") == "ok" and r.get("first_call_ms") is not None:
            r["compile_s"] = (r["first_call_ms"] - r["time_ms"]) / 1e3  # the first call less a steady one
        if (times_mean_something and r.get("status") == "ok" and base is not None
                and r["variant"] != base["variant"]):
            r["speedup"] = base["time_ms"] / r["time_ms"]
            r["efficiency"] = r["speedup"] / r["world"]
            r["single_time_ms"] = base["time_ms"]
            r["single_peak_memory_bytes"] = base.get("peak_memory_bytes")
        r.pop("bytes_vs_formula", None)
        if r.get("kind") == "cp_hooks" and r.get("formula_bytes") and r.get("attention_bytes_sent_per_rank"):
            ratios = [b / r["formula_bytes"] for b in r["attention_bytes_sent_per_rank"]]
            r["bytes_vs_formula"] = max(ratios, key=lambda x: abs(x - 1))
    return records


def write_json(out_dir: str, tag: str, meta: dict, records: list[dict]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{tag}.json")
    with open(path, "w") as f:
        json.dump(dict(meta=meta, records=annotate(records, meta)), f, indent=1)
    return path


def load(out_dir: str) -> list[tuple[str, dict]]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        with open(path) as f:
            run = json.load(f)
        annotate(run["records"], run["meta"])  # recomputed, so that report changes apply to old results too
        runs.append((os.path.splitext(os.path.basename(path))[0], run))
    return runs


# ---------------------------------------------------------------------------------------------- format
def _mib(b):
    return "" if b is None else f"{b / 2**20:.1f}"


def _f(x, spec=".2f"):
    return "" if x is None else format(x, spec)


def one_line(r: dict) -> str:
    if r.get("suite") == "cfg":
        return (f"[{r['workload']}] {r['variant']}: {statistics.median(r['time_ms_rounds']):.1f} ms, one process "
                f"{statistics.median(r['single_time_ms_rounds']):.1f} ms, efficiency {r['efficiency']:.3f}")
    if r.get("suite") == "split":
        return f"[split] {r['tokens']} tokens, {r['parts']} blocks: efficiency {r['efficiency']:.3f}"
    if r.get("status") != "ok":
        return f"[{r['workload']}] {r['variant']}: {r['status']} ({r.get('error', '')})"
    return (f"[{r['workload']}] {r['variant']}: {r['time_ms']:.1f} ms, peak {_mib(r.get('peak_memory_bytes'))} MiB, "
            f"sent {_mib(max(r.get('attention_bytes_sent_per_rank') or [0]))} MiB "
            f"(formula {_mib(r.get('formula_bytes'))}), "
            f"diff {_f(r.get('max_abs_diff'), '.1e')}")


def table(records: list[dict], times: bool = True) -> list[str]:
    """One row per variant; `times=False` (an oversubscribed run) leaves out time, speed-up and efficiency."""
    head = ["workload", "tokens", "variant"] + (["time / forward (ms)", "speed-up", "efficiency"] if times else []) + [
        "sent / rank (MiB)", "formula (MiB)", "sent / formula", "peak mem / rank (MiB)", "max abs diff",
        "cp_hooks' own time"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * (len(head) - 3)]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"| {r['workload']} | {r['tokens']} | {r['variant']} | {r['status']}: {r.get('error', '')} "
                         + "| " * (len(head) - 4) + "|")
            continue
        # Only cp_hooks' collectives are counted (diffusers' go around comm_stats): no bytes for the others.
        sent = r.get("attention_bytes_sent_per_rank") if r.get("kind") == "cp_hooks" else None
        cells = [r["workload"], r["tokens"], r["variant"]]
        if times:
            cells += [f"{r['time_ms']:.1f}", _f(r.get("speedup")), _f(r.get("efficiency"), ".3f")]
        cells += [_mib(max(sent)) if sent else "", _mib(r.get("formula_bytes")), _f(r.get("bytes_vs_formula"), ".4f"),
                  _mib(r.get("peak_memory_bytes")), _f(r.get("max_abs_diff"), ".1e"),
                  _f(100 * r["overhead_share"], ".2f") + " %" if r.get("overhead_share") is not None else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def compile_table(records: list[dict], times: bool = True) -> list[str]:
    """The compiled variants: what dynamo compiled, how long the first call took, and the gain over eager."""
    ok = [r for r in records if r.get("compile_backend") and (r.get("status") == "ok" or "graph_breaks" in r)]
    if not ok:
        return []
    head = ["workload", "variant", "backend", "graphs compiled (first call)", "graph breaks (first call)",
            "graphs compiled later", "graphs run per forward"]
    if times:
        head += ["first call (s)", "compile time (s)", "time / forward (ms)", "eager time / compiled (same rounds)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in ok:
        cells = [r["workload"], r["variant"], r["compile_backend"], r.get("graphs", ""), r.get("graph_breaks", ""),
                 r.get("recompiled_after_first_call", ""), r.get("graphs_per_forward", "")]
        if times and r.get("status") != "ok":
            cells += ["not timed (see the table above)", "", "", ""]
        elif times:
            eager = next((o for o in records if o["workload"] == r["workload"]
                          and o["variant"] == r.get("eager_variant") and o.get("status") == "ok"), None)
            gain = (_interval(paired_ratios(eager["time_ms_rounds"], r["time_ms_rounds"])) if eager else "")
            cells += [_f(r["first_call_ms"] / 1e3, ".1f"), _f(r.get("compile_s"), ".1f"), f"{r['time_ms']:.1f}", gain]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def break_reasons(records: list[dict]) -> list[str]:
    """dynamo's reason for each graph break of a compiled variant (the first line of each), with its count."""
    lines = []
    for r in records:
        for reason, n in (r.get("break_reasons") or {}).items():
            lines.append(f"- {r['workload']}, {r['variant']}: {reason.splitlines()[0]} (×{n})")
    return lines


def _interval(values: list[float]) -> str:
    m, lo, hi = median_interval(values)
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


OWNERS = (("attention", "attention kernels"), ("model", "model layers"), ("comm", "collectives and waits"),
          ("cp_hooks", "cp_hooks' own code"), ("other", "other"))


def time_split_table(records: list[dict]) -> list[str]:
    """Where a traced forward's time goes, by owner (measure.classify), mean over ranks of per-rank medians."""
    profiled = [r for r in records if r.get("overhead_per_rank")]
    if not profiled:
        return []
    lines = ["| workload | variant | traced forward (ms) | " + " | ".join(label for _, label in OWNERS) + " |",
             "|---|---|---:|" + "---:|" * len(OWNERS)]
    for r in profiled:
        ranks = r["overhead_per_rank"]
        wall = sum(o["profiled_forward_s"] for o in ranks) / len(ranks)
        shares = [sum(o["by_owner_s"].get(key, 0.0) for o in ranks) / len(ranks) / wall for key, _ in OWNERS]
        lines.append(f"| {r['workload']} | {r['variant']} | {1e3 * wall:.1f} | "
                     + " | ".join(f"{100 * x:.1f} %" for x in shares) + " |")
    return lines


def cfg_table(records: list[dict]) -> list[str]:
    rows = ["| step | image tokens | one process (ms) | cfg groups (ms) | efficiency t1 / (N t_cfg) [95% interval] | "
            "max diff |", "|---|---:|---:|---:|---:|---:|"]
    for r in records:
        m, lo, hi = median_interval([t1 / (r["world"] * t) for t1, t in
                                     zip(r["single_time_ms_rounds"], r["time_ms_rounds"])])
        rows.append(f"| {r['variant']} | {r['tokens']} | {statistics.median(r['single_time_ms_rounds']):.1f} | "
                    f"{statistics.median(r['time_ms_rounds']):.1f} | {m:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{_f(r.get('max_abs_diff'), '.1e')} |")
    return rows


def split_table(records: list[dict]) -> list[str]:
    lines = ["| tokens | blocks | one call, same kernel (ms) | one call, torch SDPA (ms) | "
             "one rank's ring compute (ms) | efficiency | efficiency vs torch SDPA |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['tokens']} | {r['parts']} | {r['full_ms']:.2f} | {_f(r.get('sdpa_ms'))} | "
                     f"{r['rank_ms']:.2f} | "
                     f"{r['efficiency']:.3f} | {_f(r.get('efficiency_vs_sdpa'), '.3f')} |")
    return lines


def machine_line(meta: dict) -> str:
    where = meta.get("gpu") or f"{meta.get('cpu')} ({meta.get('cores')} cores, {meta.get('memory_gib')} GiB)"
    load = "/".join(f"{x:.2f}" for x in meta.get("load_average_start", ()))
    load_end = "/".join(f"{x:.2f}" for x in meta.get("load_average_end", ()))
    compiled = (f"; compiled variants: torch.compile backend {meta['compile_backend']}, dynamic=False, inductor "
                "cache "
                f"{'empty at the start (cold compiles)' if meta.get('compile_cache') == 'fresh' else 'torch default'}"
                if meta.get("compile_backend") else "")
    return (f"{meta['world']} ranks on {meta['device']} ({meta['backend']}), {where}, {meta['threads_per_rank']} "
            f"thread(s) per rank, {meta['dtype']}, torch {meta['torch']}, diffusers {meta['diffusers']}, "
            f"{_rounds(meta)}{compiled}; load average at start {load}, at end {load_end}; {meta['date']}")


def _rounds(meta: dict) -> str:
    if meta.get("min_seconds"):
        return (f"at least {meta['repeats']} timed rounds per workload, more (up to {meta['max_rounds']}) until "
                f"{meta['min_seconds']:g} s of timing")
    return f"{meta['repeats']} timed rounds"


# ----------------------------------------------------------------------------------------------- goals
def goals(runs: list[tuple[str, dict]]) -> list[str]:
    """The issue's goals for 2 CPU processes x 1 thread (and 4 ranks for memory), met or not, with numbers."""
    rows = ["| goal | measured | met |", "|---|---|---|"]
    cpu2 = [r for _, run in runs if run["meta"]["device"] == "cpu" and run["meta"]["world"] == 2
            and run["meta"]["threads_per_rank"] == 1 and not oversubscribed(run["meta"]) for r in run["records"]]
    big = [r for r in cpu2 if r.get("suite") == "model" and r.get("tokens", 0) >= 4096 and r.get("status") == "ok"]
    # Eager against eager, compiled against compiled: a compiled variant's efficiency is the compiled one
    # process' time / its time / N, and it is compared with diffusers' Ulysses compiled the same way.
    for mode, single, theirs, what in (
            ("ulysses", "single", "diffusers-ulysses", ""),
            ("ring-alltoall", "single", "diffusers-ulysses", ""),
            ("ulysses-compiled", "single-compiled", "diffusers-ulysses-compiled", " (both compiled)"),
            ("ring-alltoall-compiled", "single-compiled", "diffusers-ulysses-compiled", " (both compiled)")):
        ours = [r for r in big if r["variant"] == mode and "efficiency" in r]
        if not ours:
            continue
        effs, versus = [], []
        for r in ours:
            same = {o["variant"]: o for o in big if o["workload"] == r["workload"]}
            per_round = [x / r["world"] for x in paired_ratios(same[single]["time_ms_rounds"], r["time_ms_rounds"])]
            effs.append((r["workload"],) + median_interval(per_round))
            if theirs in same:
                versus.append((r["workload"],) + median_interval(
                    paired_ratios(same[theirs]["time_ms_rounds"], r["time_ms_rounds"])))
        over = " (compiled one process / compiled CP / N)" if single != "single" else ""
        rows.append(f"| {mode}: efficiency{over} ≥ {GOAL_EFFICIENCY} at ≥ 4k tokens | "
                    + ", ".join(f"{w} {m:.3f} [{lo:.3f}, {hi:.3f}]" for w, m, lo, hi in effs)
                    + f" | {_worst(verdict(m, hi, GOAL_EFFICIENCY) for _, m, _, hi in effs)} |")
        if versus:
            rows.append(f"| {mode}: at least as fast as diffusers' Ulysses{what} (same launch; diffusers' time / "
                        "ours) | " + ", ".join(f"{w} {m:.3f} [{lo:.3f}, {hi:.3f}]" for w, m, lo, hi in versus)
                        + f" | {_worst(verdict(m, hi, 1.0) for _, m, _, hi in versus)} |")
    guided = [r for r in cpu2 if r.get("suite") == "cfg" and r.get("status") == "ok"]
    if guided:
        effs = [(f"{r['workload']} {r['variant']}",) + median_interval(
            [t1 / (r["world"] * t) for t1, t in zip(r["single_time_ms_rounds"], r["time_ms_rounds"])]) for r in guided]
        rows.append(f"| classifier-free guidance over cfg groups (cfg_degree = N): efficiency t1 / (N t_cfg) ≥ "
                    f"{GOAL_CFG} | " + ", ".join(f"{w} {m:.3f} [{lo:.3f}, {hi:.3f}]" for w, m, lo, hi in effs)
                    + f" | {_worst(verdict(m, hi, GOAL_CFG) for _, m, _, hi in effs)} |")
    ours_compiled = [r for _, run in runs for r in run["records"] if r.get("kind") == "cp_hooks"
                     and r.get("compile_backend") and r.get("status") == "ok" and "graph_breaks" in r]
    if ours_compiled:
        breaks = sum(r["graph_breaks"] for r in ours_compiled)
        again = [r for r in ours_compiled if r.get("recompiled_after_first_call")]
        rows.append(f"| torch.compile of an enabled model: no graph break, nothing compiled after the first call "
                    f"(every compiled cp_hooks variant) | {len(ours_compiled)} variants; graph breaks {breaks}; "
                    + (", ".join(f"{r['workload']} {r['variant']} compiled {r['recompiled_after_first_call']} more "
                                 "graph(s)" for r in again) or "no later compile")
                    + f" | {_yes(breaks == 0 and not again)} |")
    ratios = [(r["workload"], r["variant"], r["world"], r["bytes_vs_formula"])
              for _, run in runs for r in run["records"] if r.get("bytes_vs_formula") is not None]
    if ratios:
        worst = max(ratios, key=lambda t: abs(t[3] - 1))
        rows.append(f"| bytes sent per rank within {GOAL_BYTES:.0%} of the formula, every mode | "
                    f"{len(ratios)} records; "
                    f"largest deviation {abs(worst[3] - 1):.2%} ({worst[0]}, {worst[1]}, {worst[2]} ranks) | "
                    f"{_yes(abs(worst[3] - 1) <= GOAL_BYTES)} |")
    mem = {r["variant"]: r for _, run in runs if run["meta"]["world"] == 4 for r in run["records"]
           if r.get("suite") == "attention" and r.get("tokens") == 16384 and r.get("peak_memory_bytes")}
    if "ring-alltoall" in mem and "ring-allgather" in mem:
        a, g = mem["ring-alltoall"]["peak_memory_bytes"], mem["ring-allgather"]["peak_memory_bytes"]
        rows.append(f"| alltoall ring peak memory ≤ {GOAL_MEMORY} × allgather's (attention, 16k tokens, 4 ranks) | "
                    f"{_mib(a)} MiB vs {_mib(g)} MiB = {a / g:.3f} | {_yes(a / g <= GOAL_MEMORY)} |")
    traced = [r for r in cpu2 if r.get("overhead_share") is not None]
    over = [(r["workload"], r["variant"], r["overhead_share"]) for r in traced]
    if over:
        worst = max(s for _, _, s in over)
        how = "traced" if all(r.get("overhead_tracer") == "pytrace" for r in traced) else "profiler"
        rows.append(f"| cp_hooks' own time ≤ {GOAL_OVERHEAD:.0%} of the forward at 4k tokens ({how}) | "
                    + ", ".join(f"{w} {v} {100 * s:.2f} %" for w, v, s in over)
                    + f" | {_yes(worst <= GOAL_OVERHEAD)} |")
    return rows


def transports(runs: list[tuple[str, dict]]) -> list[str]:
    """Ulysses with the shared-memory all-to-all against the same mode over gloo, paired per round."""
    rows = []
    for tag, run in runs:
        if oversubscribed(run["meta"]):
            continue  # a time ratio there measures how the ranks share cores, not the transport
        records = [r for r in run["records"] if r.get("status") == "ok"]
        for r in records:
            if r["variant"] != "ulysses-gloo":
                continue
            same = {o["variant"]: o for o in records if o["workload"] == r["workload"]}
            if "ulysses" not in same:
                continue
            m, lo, hi = median_interval(paired_ratios(r["time_ms_rounds"], same["ulysses"]["time_ms_rounds"]))
            rows.append(f"| {tag} | {r['workload']} | {same['ulysses'].get('transport', '')} | "
                        f"{_mib(same['ulysses'].get('shared_bytes'))} | {m:.3f} [{lo:.3f}, {hi:.3f}] |")
    if not rows:
        return []
    return ["| run | workload | ulysses' all-to-all | largest send through shared memory / rank (MiB) | "
            "gloo's time / shared memory's |",
            "|---|---|---|---:|---:|"] + rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _worst(verdicts) -> str:
    """The weakest of several verdicts ("no" < "within noise" < "yes"), formatted for the goals table."""
    order = ("no", "within noise", "yes")
    worst = min(verdicts, key=order.index)
    return "yes" if worst == "yes" else f"**{worst}**"


# ----------------------------------------------------------------------------------------------- plots
def plots(runs: list[tuple[str, dict]], out_dir: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for tag, run in runs:
        for suite, family in (("model", "flux"), ("attention", "attention")):
            recs = [r for r in run["records"]
                    if r.get("suite") == suite and r.get("family") == family and r.get("status") == "ok"]
            lengths = sorted({r["tokens"] for r in recs})
            if len(lengths) < 1 or not recs:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for variant in dict.fromkeys(r["variant"] for r in recs):
                pts = sorted((r["tokens"], r) for r in recs if r["variant"] == variant)
                xs = [t for t, _ in pts]
                if any(r.get("speedup") is not None for _, r in pts):  # not the one-process baselines
                    axes[0].plot(xs, [r.get("speedup") for _, r in pts], marker="o", label=variant)
                if any(r.get("peak_memory_bytes") for _, r in pts):
                    axes[1].plot(xs, [(r.get("peak_memory_bytes") or 0) / 2**20 for _, r in pts], marker="o",
                                 label=variant)
            if oversubscribed(run["meta"]):
                axes[0].clear()  # the speed-ups of an oversubscribed run are not measurements (see `oversubscribed`)
                axes[0].set_axis_off()
                axes[0].text(0.5, 0.5, "speed-up not shown: more ranks than cores", ha="center", va="center",
                             transform=axes[0].transAxes)
            else:
                axes[0].axhline(run["meta"]["world"], color="grey", ls=":", lw=1,
                                label=f"ideal ({run['meta']['world']}x)")
                axes[0].set(title=f"speed-up over one process, {family}", xlabel="tokens", ylabel="speed-up",
                            xscale="log")
            axes[1].set(title="peak memory per rank above inputs", xlabel="tokens", ylabel="MiB", xscale="log",
                        yscale="log")
            for ax in axes:
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
            fig.suptitle(f"{tag}: {run['meta']['world']} ranks, {run['meta']['device']}", fontsize=9)
            fig.tight_layout()
            name = f"{tag}-{family}.png"
            fig.savefig(os.path.join(out_dir, name), dpi=90)
            plt.close(fig)
            made.append(name)
    return made


# --------------------------------------------------------------------------------------------- markdown
def generate(out_dir: str, readme: bool = False) -> str:
    runs = load(out_dir)
    images = plots(runs, out_dir)
    lines = ["## Goals", ""] + goals(runs) + [""]
    versus_gloo = transports(runs)
    if versus_gloo:
        lines += ["## Ulysses' all-to-all: shared memory against gloo", "",
                  "The same Ulysses mode, its all-to-alls through /dev/shm (the default for CPU ranks on one host) "
                  "or over gloo (`ulysses-gloo`), timed in the same rounds; the median of the per-round ratios and "
                  "its 95% interval. The shared buffer (this size, rounded up to a MiB) is outside torch's "
                  "allocator, so it is not in the peak memory column.", ""] + versus_gloo + [""]
    for tag, run in runs:
        meta = run["meta"]
        lines += [f"## {tag}", "", f"Machine: {machine_line(meta)}.", "", f"Command: `{meta['command']}`", ""]
        main = [r for r in run["records"] if r.get("suite") in ("model", "attention")]
        times = not oversubscribed(meta)
        if main and not times:
            cores = meta.get("usable_cores") or meta.get("cores")
            lines += [f"**Bytes and memory only.** {meta['world']} ranks × {meta['threads_per_rank']} thread(s) ran on "
                      f"{cores} cores: every rank runs the one-process baseline at the same time, each on a share of "
                      "a core, so the baseline is measured too slow by the oversubscription and the speed-ups come out "
                      f"beyond what {cores} cores can give (up to {meta['world']}x). Times, speed-ups and efficiencies "
                      "of this run are not shown; the bytes sent and the peak memory per rank do not depend on how "
                      "the ranks share the cores.", ""]
        if main:
            if times and any(r.get("compile_backend") for r in main):
                lines += ["A `-compiled` variant is the same model under `torch.compile`, on its own copy enabled once "
                          "and compiled once; its speed-up and efficiency are against `single-compiled` (one process, "
                          "compiled).", ""]
            lines += table(main, times) + [""]
        compiled = compile_table(main, times)
        if compiled:
            lines += ["What torch.compile made of each compiled variant: dynamo's counters around the first call "
                      "and over every later one (a second warm-up call and the timed rounds), and the compiled "
                      "regions one steady forward runs (the profiler's; an enabled model's top-level hooks are "
                      "frames of their own beside its forward, so they count, without any graph break). The compile "
                      "time is the first call less the median timed one; the last column is the eager variant's "
                      "time over the compiled one's, per round, with its 95% interval.", ""] + compiled + [""]
            reasons = break_reasons(main)
            if reasons:
                lines += ["Graph breaks, as dynamo gives them:", ""] + reasons + [""]
        split_by_owner = time_split_table(main)
        if split_by_owner:
            lines += ["Where the time of one traced forward goes (the tracer slows Python code, so these shares "
                      "are of a slower forward than the timed one):", ""] + split_by_owner + [""]
        guided = [r for r in run["records"] if r.get("suite") == "cfg" and r.get("status") == "ok"]
        if guided and times:
            lines += ["Classifier-free guidance over cfg groups (`cfg_degree` = ranks, no context parallelism inside "
                      "a group): one denoising step's transformer calls, batched (conditional and unconditional "
                      "stacked) or sequential (a `cond` then an `uncond` call, run at the same time by the two "
                      "groups), against every rank running the same step alone, timed in paired rounds:", ""]
            lines += cfg_table(guided) + [""]
        split = [r for r in run["records"] if r.get("suite") == "split"]
        if split:
            lines += ["Splitting attention into blocks (the compute of one ring rank, no communication):", ""]
            lines += split_table(split) + [""]
        for name in images:
            if name.startswith(tag + "-"):
                lines += [f"![{name}](results/{name})", ""]
    body = "\n".join(lines)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(body.replace("](results/", "]("))
    if readme:
        _replace_between(os.path.join(HERE, "README.md"), "<!-- results:start -->", "<!-- results:end -->", body)
        _replace_between(os.path.join(ROOT, "README.md"), "<!-- benchmarks:start -->", "<!-- benchmarks:end -->",
                         summary(runs))
    return body


def summary(runs) -> str:
    """The short section of the main README: the goals table and a link."""
    return "\n".join([
        "Measured side by side with one process and with diffusers' own context parallelism; full tables, plots,",
        "the machine and the command are in [benchmarks/README.md](benchmarks/README.md) (generated by",
        "`bash benchmarks/run_all.sh`).", ""] + goals(runs))


def _replace_between(path: str, start: str, end: str, body: str) -> None:
    with open(path) as f:
        text = f.read()
    if start not in text or end not in text:
        raise ValueError(f"{path} lacks the markers {start} ... {end}")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--readme", action="store_true", help="rewrite the README result sections too")
    a = p.parse_args()
    print(generate(a.out, readme=a.readme))

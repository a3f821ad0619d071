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

from paired import median_interval, paired_ratios, verdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOAL_EFFICIENCY, GOAL_BYTES, GOAL_MEMORY, GOAL_OVERHEAD = 0.95, 0.01, 0.6, 0.02


# ------------------------------------------------------------------------------------------------ json
def annotate(records: list[dict]) -> list[dict]:
    """Add speed-up and efficiency (against the one-process record of the same workload) and byte ratios."""
    single = {r["workload"]: r for r in records if r.get("variant") == "single" and r.get("status") == "ok"}
    for r in records:
        base = single.get(r.get("workload"))
        if r.get("status") == "ok" and base is not None and r["variant"] != "single":
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
        json.dump(dict(meta=meta, records=annotate(records)), f, indent=1)
    return path


def load(out_dir: str) -> list[tuple[str, dict]]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        with open(path) as f:
            run = json.load(f)
        annotate(run["records"])  # recomputed, so that report changes apply to old results too
        runs.append((os.path.splitext(os.path.basename(path))[0], run))
    return runs


# ---------------------------------------------------------------------------------------------- format
def _mib(b):
    return "" if b is None else f"{b / 2**20:.1f}"


def _f(x, spec=".2f"):
    return "" if x is None else format(x, spec)


def one_line(r: dict) -> str:
    if r.get("suite") == "split":
        return f"[split] {r['tokens']} tokens, {r['parts']} blocks: efficiency {r['efficiency']:.3f}"
    if r.get("status") != "ok":
        return f"[{r['workload']}] {r['variant']}: {r['status']} ({r.get('error', '')})"
    return (f"[{r['workload']}] {r['variant']}: {r['time_ms']:.1f} ms, peak {_mib(r.get('peak_memory_bytes'))} MiB, "
            f"sent {_mib(max(r.get('attention_bytes_sent_per_rank') or [0]))} MiB (formula {_mib(r.get('formula_bytes'))}), "
            f"diff {_f(r.get('max_abs_diff'), '.1e')}")


def table(records: list[dict]) -> list[str]:
    lines = ["| workload | tokens | variant | time / forward (ms) | speed-up | efficiency | sent / rank (MiB) | "
             "formula (MiB) | sent / formula | peak mem / rank (MiB) | max abs diff | cp_hooks' own time |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"| {r['workload']} | {r['tokens']} | {r['variant']} | {r['status']}: {r.get('error', '')} "
                         "| | | | | | | | |")
            continue
        # Only cp_hooks' collectives are counted (diffusers' go around comm_stats): no bytes for the others.
        sent = r.get("attention_bytes_sent_per_rank") if r.get("kind") == "cp_hooks" else None
        lines.append(
            f"| {r['workload']} | {r['tokens']} | {r['variant']} | {r['time_ms']:.1f} | {_f(r.get('speedup'))} | "
            f"{_f(r.get('efficiency'), '.3f')} | {_mib(max(sent)) if sent else ''} | {_mib(r.get('formula_bytes'))} | "
            f"{_f(r.get('bytes_vs_formula'), '.4f')} | {_mib(r.get('peak_memory_bytes'))} | "
            f"{_f(r.get('max_abs_diff'), '.1e')} | {_f(100 * r['overhead_share'], '.2f') + ' %' if r.get('overhead_share') is not None else ''} |")
    return lines


OWNERS = (("attention", "attention kernels"), ("model", "model layers"), ("comm", "collectives and waits"),
          ("cp_hooks", "cp_hooks' own code"), ("other", "other"))


def time_split_table(records: list[dict]) -> list[str]:
    """Where a profiled forward's time goes, by owner (measure.classify), mean over ranks of per-rank medians."""
    profiled = [r for r in records if r.get("overhead_per_rank")]
    if not profiled:
        return []
    lines = ["| workload | variant | profiled forward (ms) | " + " | ".join(label for _, label in OWNERS) + " |",
             "|---|---|---:|" + "---:|" * len(OWNERS)]
    for r in profiled:
        ranks = r["overhead_per_rank"]
        wall = sum(o["profiled_forward_s"] for o in ranks) / len(ranks)
        shares = [sum(o["by_owner_s"].get(key, 0.0) for o in ranks) / len(ranks) / wall for key, _ in OWNERS]
        lines.append(f"| {r['workload']} | {r['variant']} | {1e3 * wall:.1f} | "
                     + " | ".join(f"{100 * x:.1f} %" for x in shares) + " |")
    return lines


def split_table(records: list[dict]) -> list[str]:
    lines = ["| tokens | blocks | one call, same kernel (ms) | one call, torch SDPA (ms) | one rank's ring compute (ms) | "
             "efficiency | efficiency vs torch SDPA |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['tokens']} | {r['parts']} | {r['full_ms']:.2f} | {_f(r.get('sdpa_ms'))} | {r['rank_ms']:.2f} | "
                     f"{r['efficiency']:.3f} | {_f(r.get('efficiency_vs_sdpa'), '.3f')} |")
    return lines


def machine_line(meta: dict) -> str:
    where = meta.get("gpu") or f"{meta.get('cpu')} ({meta.get('cores')} cores, {meta.get('memory_gib')} GiB)"
    load = "/".join(f"{x:.2f}" for x in meta.get("load_average_start", ()))
    load_end = "/".join(f"{x:.2f}" for x in meta.get("load_average_end", ()))
    return (f"{meta['world']} ranks on {meta['device']} ({meta['backend']}), {where}, {meta['threads_per_rank']} "
            f"thread(s) per rank, {meta['dtype']}, torch {meta['torch']}, diffusers {meta['diffusers']}, "
            f"{_rounds(meta)}; load average at start {load}, at end {load_end}; {meta['date']}")


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
            and run["meta"]["threads_per_rank"] == 1 for r in run["records"]]
    big = [r for r in cpu2 if r.get("suite") == "model" and r.get("tokens", 0) >= 4096 and r.get("status") == "ok"]
    for mode in ("ulysses", "ring-alltoall"):
        ours = [r for r in big if r["variant"] == mode and "efficiency" in r]
        if not ours:
            continue
        effs, versus = [], []
        for r in ours:
            same = {o["variant"]: o for o in big if o["workload"] == r["workload"]}
            per_round = [x / r["world"] for x in paired_ratios(same["single"]["time_ms_rounds"], r["time_ms_rounds"])]
            effs.append((r["workload"],) + median_interval(per_round))
            if "diffusers-ulysses" in same:
                versus.append((r["workload"],) + median_interval(
                    paired_ratios(same["diffusers-ulysses"]["time_ms_rounds"], r["time_ms_rounds"])))
        rows.append(f"| {mode}: efficiency ≥ {GOAL_EFFICIENCY} at ≥ 4k tokens | "
                    + ", ".join(f"{w} {m:.3f} [{lo:.3f}, {hi:.3f}]" for w, m, lo, hi in effs)
                    + f" | {_worst(verdict(m, hi, GOAL_EFFICIENCY) for _, m, _, hi in effs)} |")
        if versus:
            rows.append(f"| {mode}: at least as fast as diffusers' Ulysses (same launch; diffusers' time / ours) | "
                        + ", ".join(f"{w} {m:.3f} [{lo:.3f}, {hi:.3f}]" for w, m, lo, hi in versus)
                        + f" | {_worst(verdict(m, hi, 1.0) for _, m, _, hi in versus)} |")
    ratios = [(r["workload"], r["variant"], r["world"], r["bytes_vs_formula"]) for _, run in runs for r in run["records"]
              if r.get("bytes_vs_formula") is not None]
    if ratios:
        worst = max(ratios, key=lambda t: abs(t[3] - 1))
        rows.append(f"| bytes sent per rank within {GOAL_BYTES:.0%} of the formula, every mode | {len(ratios)} records; "
                    f"largest deviation {abs(worst[3] - 1):.2%} ({worst[0]}, {worst[1]}, {worst[2]} ranks) | "
                    f"{_yes(abs(worst[3] - 1) <= GOAL_BYTES)} |")
    mem = {r["variant"]: r for _, run in runs if run["meta"]["world"] == 4 for r in run["records"]
           if r.get("suite") == "attention" and r.get("tokens") == 16384 and r.get("peak_memory_bytes")}
    if "ring-alltoall" in mem and "ring-allgather" in mem:
        a, g = mem["ring-alltoall"]["peak_memory_bytes"], mem["ring-allgather"]["peak_memory_bytes"]
        rows.append(f"| alltoall ring peak memory ≤ {GOAL_MEMORY} × allgather's (attention, 16k tokens, 4 ranks) | "
                    f"{_mib(a)} MiB vs {_mib(g)} MiB = {a / g:.3f} | {_yes(a / g <= GOAL_MEMORY)} |")
    over = [(r["workload"], r["variant"], r["overhead_share"]) for r in cpu2 if r.get("overhead_share") is not None]
    if over:
        worst = max(s for _, _, s in over)
        rows.append(f"| cp_hooks' own time ≤ {GOAL_OVERHEAD:.0%} of the forward at 4k tokens (profiler) | "
                    + ", ".join(f"{w} {v} {100 * s:.2f} %" for w, v, s in over) + f" | {_yes(worst <= GOAL_OVERHEAD)} |")
    return rows


def transports(runs: list[tuple[str, dict]]) -> list[str]:
    """Ulysses with the shared-memory all-to-all against the same mode over gloo, paired per round."""
    rows = []
    for tag, run in runs:
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
            recs = [r for r in run["records"] if r.get("suite") == suite and r.get("family") == family and r.get("status") == "ok"]
            lengths = sorted({r["tokens"] for r in recs})
            if len(lengths) < 1 or not recs:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for variant in dict.fromkeys(r["variant"] for r in recs):
                pts = sorted((r["tokens"], r) for r in recs if r["variant"] == variant)
                xs = [t for t, _ in pts]
                if variant != "single":
                    axes[0].plot(xs, [r.get("speedup") for _, r in pts], marker="o", label=variant)
                if any(r.get("peak_memory_bytes") for _, r in pts):
                    axes[1].plot(xs, [(r.get("peak_memory_bytes") or 0) / 2**20 for _, r in pts], marker="o", label=variant)
            axes[0].axhline(run["meta"]["world"], color="grey", ls=":", lw=1, label=f"ideal ({run['meta']['world']}x)")
            axes[0].set(title=f"speed-up over one process, {family}", xlabel="tokens", ylabel="speed-up", xscale="log")
            axes[1].set(title="peak memory per rank above inputs", xlabel="tokens", ylabel="MiB", xscale="log", yscale="log")
            for ax in axes:
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
        if main:
            lines += table(main) + [""]
        split_by_owner = time_split_table(main)
        if split_by_owner:
            lines += ["Where the time of one profiled forward goes (the profiler slows Python code, so these shares "
                      "are of a slower forward than the timed one):", ""] + split_by_owner + [""]
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

"""Classifier-free guidance over cfg groups: the transformer steps of a CFG pipeline, side by side with one process.

    torchrun --nproc_per_node 2 benchmarks/cfg_steps.py                # CPU: 2 gloo ranks, 1 thread each
    torchrun --nproc_per_node 2 benchmarks/cfg_steps.py --tokens 4096 --rounds 15
    torchrun --nproc_per_node 2 benchmarks/run.py --suites cfg        # the same, into the results and goals

One denoising step of guidance is timed two ways, each against every rank running the same step alone:

* batched: one call with the conditional and unconditional inputs stacked (batch 2), `cfg_degree=2` splitting
  the batch over the two ranks;
* sequential: a "cond" call then an "uncond" call (as Wan, QwenImage and Flux true CFG do), `cfg_degree=2`
  running them at the same time after the first step has learned the difference.

Every round times both variants of a pattern seconds apart (paired, order alternating); efficiency is
t(one process) / (ranks x t(cfg)) per round, reported as the median with its 95% bootstrap interval
(`paired.py`); the goal is 0.97 (nothing but the outputs crosses between the groups). Only
`cfg_degree = ranks` is timed (no context parallelism inside a group), so that the ranks are the cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paired  # noqa: E402
import workloads  # noqa: E402
from cp_hooks import ContextParallelConfig, enable_parallelism, init_distributed, shutdown_distributed  # noqa: E402

GOAL = 0.97


def _stacked(inputs: dict, negative: dict) -> dict:
    """Batch 2: conditional then unconditional (tensors with a batch dimension stacked)."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and key not in ("img_ids", "txt_ids"):
            out[key] = torch.cat([value, negative.get(key, value)])
        else:
            out[key] = value
    return out


def _timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    worst = torch.tensor([elapsed], dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # a step is done when the slowest rank is
    return worst.item()


def bench_cfg(tokens: int, rounds: int, device, world: int) -> list[dict]:
    """Records (suite "cfg") of the batched and, with 2 ranks, sequential guidance step: the per-round times of
    one process and of `cfg_degree=world`, and their paired efficiency."""
    w = workloads.flux(tokens, device, torch.float32)
    g = torch.Generator().manual_seed(2)
    negative = dict(encoder_hidden_states=torch.randn(w.inputs["encoder_hidden_states"].shape, generator=g),
                    pooled_projections=torch.randn(w.inputs["pooled_projections"].shape, generator=g))
    negative_inputs = {**w.inputs, **negative}
    batched_inputs = _stacked(w.inputs, negative)

    single = w.model
    cfg_model = enable_parallelism(copy.deepcopy(single), ContextParallelConfig(cfg_degree=world))

    def batched(model):
        return lambda: model(**batched_inputs)

    def sequential(model):
        def step():
            with model.cache_context("cond"):
                cond = model(**w.inputs)[0]
            with model.cache_context("uncond"):
                uncond = model(**negative_inputs)[0]
            return cond, uncond
        return step

    patterns = {"cfg-batched": batched}
    if world == 2:  # sequential guidance pairs two calls: two groups
        patterns["cfg-sequential"] = sequential
    records = []
    with torch.no_grad():
        for name, make in patterns.items():
            runs = {"single": make(single), "cfg": make(cfg_model)}
            outputs = {k: run() for k, run in runs.items()}  # warm-up; sequential cfg learns its substitutions here
            pairs = zip(_tensors(outputs["cfg"]), _tensors(outputs["single"]))
            diff = max((a - b).abs().max().item() for a, b in pairs)
            times = {k: [] for k in runs}
            for r in range(rounds):
                order = list(runs) if r % 2 == 0 else list(reversed(list(runs)))
                for key in order:
                    times[key].append(_timed(runs[key]))
            efficiency = [s / (world * c) for s, c in zip(times["single"], times["cfg"])]
            median, low, high = paired.median_interval(efficiency)
            records.append(dict(suite="cfg", workload=f"flux-{tokens}", variant=name, kind="cp_hooks", world=world,
                                tokens=tokens, status="ok", description=w.description, max_abs_diff=diff,
                                time_ms_rounds=[1e3 * t for t in times["cfg"]],
                                single_time_ms_rounds=[1e3 * t for t in times["single"]],
                                efficiency=median, efficiency_interval=[low, high]))
    return records


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in _tensors(item)] if isinstance(output, (tuple, list)) else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1024, help="image tokens of the tiny Flux")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    args = p.parse_args()
    device = init_distributed()
    torch.set_num_threads(args.threads)
    world = dist.get_world_size()
    records = bench_cfg(args.tokens, args.rounds, device, world)
    if dist.get_rank() == 0:
        print(f"cfg_degree={world} on {world} {device.type} ranks, tiny Flux with {args.tokens} image tokens "
              f"({records[0]['description']}), {args.rounds} paired rounds")
        print("| step | one process (ms) | cfg (ms) | efficiency t1 / (N t_cfg) [95% interval] | goal ≥ 0.97 |")
        print("|---|---:|---:|---:|---|")
        for r in records:
            low, high = r["efficiency_interval"]
            print(f"| {r['variant']} | {_median(r['single_time_ms_rounds']):.1f} | "
                  f"{_median(r['time_ms_rounds']):.1f} | "
                  f"{r['efficiency']:.3f} [{low:.3f}, {high:.3f}] | {paired.verdict(r['efficiency'], high, GOAL)} |")
    shutdown_distributed()
    return 0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


if __name__ == "__main__":
    raise SystemExit(main())

"""The tiny example pipelines end to end, with and without VAE parallelism, on the same ranks in one launch.

    torchrun --nproc_per_node 2 benchmarks/pipeline_vae.py [--rounds 7] [--steps 4]

For the offline tiny pipelines of the examples (Flux at 256x256, Wan at 9 frames of 64x64; random weights), each
round times, in alternating order, one whole pipeline call with the transformer context-parallel (Ulysses over
all ranks) and the VAE decoded (a) whole on every rank (`vae=False`) and (b) split over the ranks (`vae=True`).
A time is the slowest rank's. Reported: the median per-round ratio (a) / (b) with its 95 % bootstrap interval
(`paired.py`), and the largest difference between the two outputs (they must agree to fp32 rounding).

The tiny VAEs are small: their decode is a small part of the call, and the halo exchange's fixed cost can
outweigh the work it saves. The measurement says what a user of these examples sees, not what a real-size VAE
gains (`vae_decode.py` measures that).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paired  # noqa: E402
from cp_hooks import ContextParallelConfig, disable_parallelism, enable_parallelism  # noqa: E402
from cp_hooks.verify.tiny_pipelines import tiny_flux_pipeline, tiny_wan_pipeline  # noqa: E402

WORKLOADS = {
    "flux 256x256": (tiny_flux_pipeline, dict(prompt="a fox", height=256, width=256, guidance_scale=3.5), "images"),
    "wan 9x64x64": (tiny_wan_pipeline, dict(prompt="a fox", height=64, width=64, num_frames=9, guidance_scale=1.0),
                    "frames"),
}


def _call(pipe, kwargs: dict, steps: int, output_attr: str) -> tuple[torch.Tensor, float]:
    dist.barrier()
    start = time.perf_counter()
    out = pipe(**kwargs, num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(0))
    elapsed = torch.tensor([time.perf_counter() - start])
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's time
    return torch.as_tensor(getattr(out, output_attr)), elapsed.item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    world = dist.get_world_size()
    for name, (build, kwargs, output_attr) in WORKLOADS.items():
        pipes = {}
        for vae in (False, True):
            pipe = build(seed=0)
            pipe.set_progress_bar_config(disable=True)
            enable_parallelism(pipe, ContextParallelConfig(ulysses_degree=world), vae=vae)
            pipes[vae] = pipe
        outputs = {vae: _call(pipes[vae], kwargs, args.steps, output_attr)[0] for vae in pipes}  # warm-up
        times: dict[bool, list[float]] = {False: [], True: []}
        for round_index in range(args.rounds):
            for vae in (False, True) if round_index % 2 == 0 else (True, False):
                times[vae].append(_call(pipes[vae], kwargs, args.steps, output_attr)[1])
        for pipe in pipes.values():
            disable_parallelism(pipe)
        ratio, low, high = paired.median_interval(paired.paired_ratios(times[False], times[True]))
        diff = (outputs[True].float() - outputs[False].float()).abs().max().item()
        if dist.get_rank() == 0:
            whole, split = sorted(times[False])[len(times[False]) // 2], sorted(times[True])[len(times[True]) // 2]
            print(f"{name}, {world} ranks, {args.steps} steps: VAE whole on every rank {whole:.3f} s, VAE split "
                  f"{split:.3f} s; whole / split {ratio:.3f} [{low:.3f}, {high:.3f}]; max |difference| {diff:.1e}",
                  flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

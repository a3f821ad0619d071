"""Patch-parallel VAE decode (cp_hooks.vae) beside one process, real-size VAEs with random weights.

    torchrun --nproc_per_node 2 benchmarks/vae_decode.py                  # CPU: 2 gloo ranks, 1 thread each
    torchrun --nproc_per_node 2 benchmarks/vae_decode.py --rounds 3 --wan-frames 17 --wan-size 256

Two workloads: `AutoencoderKL` with Flux's configuration (16 latent channels, 128-256-512-512) decoding a
512x512 image, and `AutoencoderKLWan` with Wan 2.1's configuration decoding `--wan-frames` frames of
`--wan-size`^2. Each round times, seconds apart and in alternating order, every rank decoding the whole
latent alone ("one process": what a pipeline without VAE parallelism does on each rank) and the ranks
decoding together (each its slab of rows); a time is the slowest rank's. Reported: the speed-up (median of
the per-round ratios, with a 95% bootstrap interval, `paired.py`), the peak memory per rank of each variant
and their ratio, and the halo and norm bytes `comm_stats()` counted beside the formula of docs/vae.md.

Peak memory on CPU: the high-water mark of the process's resident set (`ru_maxrss`) above what it held
before the first decode, measured once per variant, the parallel decode first (a high-water mark only
rises: the one-process decode, measured second, must exceed it to be seen; for the same reason run one
workload per launch, `--skip`, when the memory figures matter). On a GPU: `max_memory_allocated`.
Goals (issue #22): speed-up >= 1.7, peak memory ratio <= 0.6 at 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paired  # noqa: E402
from cp_hooks import comm  # noqa: E402
from cp_hooks.vae import disable_vae_parallelism, enable_vae_parallelism  # noqa: E402
from cp_hooks.vae.conv import find_units  # noqa: E402
from cp_hooks.vae.norm import find_group_norms  # noqa: E402

SPEEDUP_GOAL, MEMORY_GOAL = 1.7, 0.6


def flux_vae():
    """AutoencoderKL with black-forest-labs/FLUX.1-dev's vae/config.json (random weights)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
                         scaling_factor=0.3611, shift_factor=0.1159, sample_size=1024)


def wan_vae():
    """AutoencoderKLWan with Wan-AI/Wan2.1-T2V-1.3B-Diffusers' vae/config.json (random weights)."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                            temperal_downsample=[False, True, True], dropout=0.0)


def _peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    worst = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # a decode is done when the slowest rank is
    return worst.item()


def formula_bytes(vae, decode) -> dict[str, int]:
    """Halo and norm bytes this rank sends, by the formula of docs/vae.md, tallied from every layer's input.

    Halo: per conv unit call, (halo_bottom if rank > 0) + (halo_top if rank < N-1) rows of each slab tensor
    (input and temporal cache), each row `numel / height x element size` bytes. Norm: per GroupNorm call,
    3 float64 numbers per (sample, group) to each of the N-1 other ranks.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    total = {"vae_halo": 0, "vae_norm": 0}
    handles = []

    def halo_hook(geometry):
        def hook(module, args):
            x = args[0]
            row_bytes = sum(a.numel() // a.shape[-2] * a.element_size() for a in args
                            if torch.is_tensor(a) and a.ndim == x.ndim and a.shape[-2] == x.shape[-2])
            rows = (geometry.halo_bottom if rank > 0 else 0) + (geometry.halo_top if rank < world - 1 else 0)
            total["vae_halo"] += rows * row_bytes
        return hook

    def norm_hook(module, args):
        total["vae_norm"] += 3 * 8 * args[0].shape[0] * module.num_groups * (world - 1)

    for module, geometry in find_units(vae).items():
        handles.append(module.register_forward_pre_hook(halo_hook(geometry)))
    for module in find_group_norms(vae):
        handles.append(module.register_forward_pre_hook(norm_hook))
    try:
        decode()
    finally:
        for h in handles:
            h.remove()
    return total


def run_workload(name: str, vae, latent: torch.Tensor, rounds: int, device) -> dict:
    vae = vae.to(device).eval()
    latent = latent.to(device)
    decode = lambda: vae.decode(latent).sample  # noqa: E731
    outputs = []
    with torch.no_grad():
        base = _peak_bytes(device)
        enable_vae_parallelism(vae)
        with comm.comm_stats() as stats:  # warm-up, the parallel peak (first: see docstring) and the bytes
            expected = formula_bytes(vae, lambda: outputs.append(decode()))
        out_parallel = outputs.pop()
        peak_parallel = _peak_bytes(device) - base
        counted = {k: stats.payload_sent.get(k, 0) for k in ("vae_halo", "vae_norm", "vae_attention", "vae_output")}
        disable_vae_parallelism(vae)
        out_whole = decode()
        peak_whole = _peak_bytes(device) - base
        error = ((out_parallel - out_whole).abs().max() / out_whole.abs().max().clamp(min=1)).item()
        whole_t, parallel_t = [], []
        for r in range(rounds):
            order = ("whole", "parallel") if r % 2 == 0 else ("parallel", "whole")
            for variant in order:
                if variant == "parallel":
                    enable_vae_parallelism(vae)
                    parallel_t.append(_timed(decode))
                    disable_vae_parallelism(vae)
                else:
                    whole_t.append(_timed(decode))
    speedups = paired.paired_ratios(whole_t, parallel_t)
    median, low, high = paired.median_interval(speedups)
    peaks = torch.tensor([peak_parallel, peak_whole], dtype=torch.float64)
    dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
    return {
        "workload": name, "latent": list(latent.shape), "output": list(out_whole.shape),
        "ranks": dist.get_world_size(), "device": str(device), "rounds": rounds,
        "one_process_s": whole_t, "parallel_s": parallel_t,
        "speedup": {"median": median, "low": low, "high": high, "goal": SPEEDUP_GOAL},
        "peak_bytes_per_rank": {"parallel": peaks[0].item(), "one_process": peaks[1].item(),
                                "ratio": peaks[0].item() / max(peaks[1].item(), 1.0), "goal": MEMORY_GOAL},
        "bytes_sent_rank0_counted": counted, "bytes_sent_rank0_formula": expected,
        "max_relative_error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kl-size", type=int, default=512)
    parser.add_argument("--wan-frames", type=int, default=5)
    parser.add_argument("--wan-size", type=int, default=256)
    parser.add_argument("--skip", choices=["kl", "wan"], action="append", default=[])
    parser.add_argument("--json", default=None, help="write the results here (rank 0)")
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    results = []
    torch.manual_seed(0)
    if "kl" not in args.skip:
        latent = torch.randn(1, 16, args.kl_size // 8, args.kl_size // 8)
        results.append(run_workload(f"AutoencoderKL (Flux) {args.kl_size}x{args.kl_size}", flux_vae(), latent,
                                    args.rounds, device))
    if "wan" not in args.skip:
        latent = torch.randn(1, 16, (args.wan_frames - 1) // 4 + 1, args.wan_size // 8, args.wan_size // 8)
        results.append(run_workload(f"AutoencoderKLWan (2.1) {args.wan_frames}x{args.wan_size}x{args.wan_size}",
                                    wan_vae(), latent, args.rounds, device))
    if dist.get_rank() == 0:
        for r in results:
            s, m = r["speedup"], r["peak_bytes_per_rank"]
            print(f"{r['workload']} on {r['ranks']} {r['device']} ranks: speed-up {s['median']:.2f}x "
                  f"[{s['low']:.2f}, {s['high']:.2f}] (goal >= {SPEEDUP_GOAL}); one process "
                  f"{min(r['one_process_s']):.2f}s, parallel {min(r['parallel_s']):.2f}s; peak per rank "
                  f"{m['parallel'] / 2**20:.0f} MiB vs {m['one_process'] / 2**20:.0f} MiB = {m['ratio']:.2f} "
                  f"(goal <= {MEMORY_GOAL}); max rel error {r['max_relative_error']:.1e}")
            print(f"  bytes sent by rank 0: counted {r['bytes_sent_rank0_counted']}, "
                  f"formula {r['bytes_sent_rank0_formula']}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

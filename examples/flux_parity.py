"""The main job: a small random Flux transformer, single process vs. context parallel, on every rank.

    accelerate launch --multi_gpu --num_processes 2 examples/flux_parity.py          # CPU: 2 gloo ranks
    torchrun --nproc_per_node 4 examples/flux_parity.py --ring 2 --ulysses 2         # hybrid
    accelerate launch --num_processes 8 examples/flux_parity.py --ulysses 8 --height 128 --width 128  # GPUs

Every rank builds the same random model and inputs, runs the model whole (the single-process reference,
one thread per rank on CPU), then with context parallelism, and rank 0 prints the max difference and the
time per forward of both. Exits with status 1 if the difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from cp_hooks import ContextParallelConfig, enable_parallelism, init_distributed, shutdown_distributed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ring", type=int, default=1, help="ring degree")
    p.add_argument("--ulysses", type=int, default=None, help="Ulysses degree (default: world size / ring)")
    p.add_argument("--rotate-method", choices=["allgather", "alltoall"], default="allgather")
    p.add_argument("--anything", action="store_true", help="allow uneven lengths / heads (anything modes)")
    p.add_argument("--height", type=int, default=32, help="latent height = image tokens per column")
    p.add_argument("--width", type=int, default=32, help="latent width")
    p.add_argument("--text-len", type=int, default=64, help="text tokens")
    p.add_argument("--layers", type=int, default=2, help="double-stream and single-stream blocks, each")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per variant (median reported)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    return p.parse_args()


def build(args, device, dtype):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.layers, num_single_layers=args.layers,
        attention_head_dim=args.head_dim, num_attention_heads=args.heads, joint_attention_dim=128,
        pooled_projection_dim=128, guidance_embeds=True, axes_dims_rope=(args.head_dim // 4, 3 * args.head_dim // 8,
                                                                        3 * args.head_dim // 8),
    ).to(device).eval()
    if dtype != torch.float32:
        model.to(dtype)
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(args.height, args.width, 3)
    ids[..., 1] = torch.arange(args.height)[:, None]
    ids[..., 2] = torch.arange(args.width)[None, :]
    inputs = dict(
        hidden_states=torch.randn(1, args.height * args.width, 64, generator=g),
        encoder_hidden_states=torch.randn(1, args.text_len, 128, generator=g),
        pooled_projections=torch.randn(1, 128, generator=g),
        timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
        img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(args.text_len, 3),
    )
    inputs = {k: v.to(device, dtype if v.is_floating_point() and k not in ("img_ids", "txt_ids") else v.dtype)
              for k, v in inputs.items()}
    return model, dict(inputs, return_dict=False)


def time_forward(model, inputs, repeats: int, device) -> tuple[torch.Tensor, float]:
    times = []
    with torch.no_grad():
        out = model(**inputs)[0]  # warm-up
        for _ in range(repeats):
            if dist.is_initialized():
                dist.barrier()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(**inputs)[0]
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main() -> int:
    args = parse_args()
    device = init_distributed()
    if device.type == "cpu":
        torch.set_num_threads(1)  # one core per rank: the single-process reference gets the same
    world, rank = dist.get_world_size(), dist.get_rank()
    ulysses = args.ulysses or max(1, world // args.ring)
    config = ContextParallelConfig(ring_degree=args.ring, ulysses_degree=ulysses, rotate_method=args.rotate_method,
                                   ulysses_anything=args.anything and ulysses > 1,
                                   ring_anything=args.anything and args.ring > 1)
    dtype = getattr(torch, args.dtype)
    model, inputs = build(args, device, dtype)

    reference, single_time = time_forward(model, inputs, args.repeats, device)
    enable_parallelism(model, config)
    out, cp_time = time_forward(model, inputs, args.repeats, device)

    diff = (out.float() - reference.float()).abs().max().item()
    scale = max(1.0, reference.float().abs().max().item())
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    ok = diff / scale <= tol
    if rank == 0:
        mode = f"ring {config.ring_degree} x ulysses {config.ulysses_degree}, rotate {config.rotate_method}"
        tokens = args.height * args.width + args.text_len
        print(f"Flux (random, {args.layers}+{args.layers} blocks, {args.heads}x{args.head_dim} heads), "
              f"{tokens} tokens, "
              f"{args.dtype}, {world} ranks on {device.type}: {mode}")
        print(f"max |context parallel - single process| = {diff:.3e} (relative {diff / scale:.3e}, "
              f"tolerance {tol:g}): {'PASS' if ok else 'FAIL'}")
        print(f"time per forward: single process {single_time * 1e3:.1f} ms, context parallel {cp_time * 1e3:.1f} ms, "
              f"speed-up {single_time / cp_time:.2f}x")
    shutdown_distributed()  # every rank reaches the teardown before any leaves (see its docstring)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""One GPU: what torch.compile makes of cp_hooks' context-parallel path, against the same model without it.

A degree-1 mesh (ring 1 x ulysses 1) runs every cp_hooks hook and operator (split, attention operator with the
CUDA local kernel and its log-sum-exp, gather) with nothing to exchange, so "cp_hooks / one process" at each
compile mode is what the context-parallel machinery costs on a GPU once compiled; the collectives themselves
need one GPU per rank and are not measured here. Each variant is its own copy of the model, compiled once
with `fullgraph=True`; the timed calls alternate between variants round by round so that clock drift falls on
all of them alike.

    torchrun --nproc_per_node 1 benchmarks/cuda_compile.py --out benchmarks/results

Writes `cuda-1gpu-compile.json` (kept in benchmarks/results/one_gpu/) and prints a markdown table
(benchmarks/README.md, "cuda-1gpu-compile").
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import time

import torch
import torch.distributed as dist


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=64, help="latent height in tokens (image tokens = height * width)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--text", type=int, default=512, help="text tokens")
    p.add_argument("--layers", type=int, default=1, help="double-stream blocks")
    p.add_argument("--single-layers", type=int, default=2, help="single-stream blocks")
    p.add_argument("--modes", default="default,reduce-overhead,max-autotune-no-cudagraphs",
                   help="inductor modes to compile with ('default' is mode=None)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default=None, help="folder for cuda-1gpu-compile.json")
    return p.parse_args(argv)


def build(args):
    """A Flux.1-shaped transformer (24 heads x 128, hidden 3072) with few blocks, bf16, random weights."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=args.layers, num_single_layers=args.single_layers,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
        guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    ).to("cuda", torch.bfloat16).eval()
    h, w = args.height, args.width
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    g = torch.Generator(device="cuda").manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, h * w, 64, generator=g, device="cuda", dtype=torch.bfloat16),
        encoder_hidden_states=torch.randn(1, args.text, 4096, generator=g, device="cuda", dtype=torch.bfloat16),
        pooled_projections=torch.randn(1, 768, generator=g, device="cuda", dtype=torch.bfloat16),
        timestep=torch.full((1,), 0.5, device="cuda", dtype=torch.bfloat16),
        guidance=torch.full((1,), 3.5, device="cuda", dtype=torch.bfloat16),
        img_ids=img_ids.reshape(-1, 3).cuda(), txt_ids=torch.zeros(args.text, 3, device="cuda"), return_dict=False,
    )
    return model, inputs


def one_rank_config():
    from torch.distributed.device_mesh import init_device_mesh

    from cp_hooks import ContextParallelConfig

    return ContextParallelConfig(mesh=init_device_mesh("cuda", (1, 1), mesh_dim_names=("ring", "ulysses")))


def make_variants(base, modes: list[str]) -> dict:
    """name -> (callable model, compile mode or None for eager, cp_hooks on?)."""
    from cp_hooks import enable_parallelism

    variants = {}
    for mode in ["eager"] + modes:
        for cp in (False, True):
            model = copy.deepcopy(base)
            if cp:
                enable_parallelism(model, one_rank_config())
            if mode != "eager":
                model = torch.compile(model, fullgraph=True, mode=None if mode == "default" else mode)
            variants[f"{'cp_hooks' if cp else 'one process'}, {mode}"] = (model, mode, cp)
    return variants


@torch.no_grad()
def main(argv=None) -> int:
    args = parse_args(argv)
    if not dist.is_initialized():
        dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
    torch.cuda.set_device(0)
    torch._dynamo.config.cache_size_limit = 64  # every copy shares the class's forward code object
    modes = [m for m in args.modes.split(",") if m]
    base, inputs = build(args)
    reference = base(**inputs)[0].float()
    variants = make_variants(base, modes)
    del base
    records = {}
    for name, (model, mode, cp) in variants.items():
        before = sum(torch._dynamo.utils.counters["graph_break"].values())
        skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(**inputs)[0].float()
        model(**inputs)  # CUDA graphs record on the second call
        torch.cuda.synchronize()
        err = ((out - reference).abs().max() / reference.abs().max().clamp(min=1)).item()
        records[name] = dict(mode=mode, cp_hooks=cp, first_calls_s=time.perf_counter() - start, error=err,
                             graph_breaks=sum(torch._dynamo.utils.counters["graph_break"].values()) - before,
                             cudagraph_skips=torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] - skips,
                             times_ms=[])
        print(f"compiled {name}: {records[name]['first_calls_s']:.1f} s, error {err:.1e}", flush=True)
    for _ in range(args.rounds):
        for name, (model, _, _) in variants.items():
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            model(**inputs)
            end.record()
            end.synchronize()
            records[name]["times_ms"].append(begin.elapsed_time(end))
    for r in records.values():
        r["median_ms"] = statistics.median(r["times_ms"])
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, tokens=args.height * args.width,
                text=args.text, blocks=f"{args.layers}+{args.single_layers}", dtype="bfloat16", rounds=args.rounds,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                cudnn_sdpa=torch.backends.cuda.cudnn_sdp_enabled(), flash_sdpa=torch.backends.cuda.flash_sdp_enabled())
    print(table(meta, records))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "cuda-1gpu-compile.json"), "w") as f:
            json.dump(dict(meta=meta, records=records), f, indent=1)
    dist.destroy_process_group()
    return 0


def table(meta: dict, records: dict) -> str:
    lines = [f"{meta['device']}, torch {meta['torch']}, {meta['dtype']}, Flux.1 shapes with {meta['blocks']} blocks, "
             f"{meta['tokens']} image + {meta['text']} text tokens, median of {meta['rounds']} alternating rounds",
             "", "| variant | first two calls (s) | median (ms) | cp_hooks / one process | graph breaks | "
             "cudagraph skips | error vs eager |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in records.items():
        twin = records.get(name.replace("cp_hooks", "one process"))
        ratio = f"{r['median_ms'] / twin['median_ms']:.3f}" if r["cp_hooks"] and twin else ""
        lines.append(f"| {name} | {r['first_calls_s']:.1f} | {r['median_ms']:.2f} | {ratio} | {r['graph_breaks']} | "
                     f"{r['cudagraph_skips']} | {r['error']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

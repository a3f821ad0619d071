"""Quality of lower-precision communication (`comm_dtype`): the error it adds, per layer and after denoising.

Not a test: it measures, and `docs/comm_precision.md` reports what it printed. Run:

    python benchmarks/comm_precision.py [--steps 20] [--json out.json]

How it measures. Context-parallel attention with `comm_dtype` equals one process in which the same tensors are
rounded the same way at the same points (tests/test_comm_precision.py shows it for every mode, to fp32 where
nothing rounded is computed and statistically elsewhere). So one process suffices: SDPA is wrapped to round
as each mode does (`emulated`): Ulysses rounds q, k, v and the output; the ring rounds K and V. Cross-attention
to replicated text (query and key lengths differ) is not communicated, so not rounded. The error is the
relative L2 distance ||x - x_full|| / ||x_full|| to full-precision communication, for
  * each transformer block's output, in one forward at the middle timestep (errors accumulate down the blocks);
  * the final latent after a 20-step flow-matching Euler loop (x <- x + (s_next - s) * v(x, s), sigma 1 -> 0)
    from the same noise.

"Weights scaled so that activations look like a trained model's" (`trained_like`): the tiny configs' random
initialisation gives nearly uniform attention (score std ~0.3), where any key error is harmless. Trained DiTs
have sharp attention (score std of several units; a few keys take most of the weight) and q/k RMSNorm gains
with a few outlier channels (which set each row's amax, hence its fp8 scale). So:
  1. every attention and feed-forward Linear is redrawn N(0, 1/fan_in) (unit gain, as trained residual
     branches are: activations keep their size through the blocks instead of shrinking by sqrt(3));
  2. the q/k RMSNorm gains are 1.6 on every channel and 6 on a random 1/16 of them (outliers), which puts
     the score std near 5 (the scores scale with the square of the gains).
The printed score statistics (std of q·k/sqrt(d), mean largest softmax weight) show what that gives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cp_hooks.comm import precision  # noqa: E402

FP8 = torch.float8_e4m3fn
# name -> (comm_dtype, comm_fp8_keys, which of q, k, v, out are rounded by the scheme (None: all of Ulysses'))
SCHEMES = {
    "bf16": (torch.bfloat16, False, None),
    "fp16": (torch.float16, False, None),
    "fp8 e4m3, bf16 keys": (FP8, False, None),
    "fp8 e4m3 keys": (FP8, True, None),
    "fp8 e5m2, bf16 keys": (torch.float8_e5m2, False, None),
    # The key-error finding: fp8 on one tensor alone (the others unrounded).
    "fp8 q only": (FP8, True, ("q",)),
    "fp8 k only": (FP8, True, ("k",)),
    "fp8 v only": (FP8, True, ("v",)),
    "fp8 out only": (FP8, True, ("out",)),
}
MODES = {"ulysses": (1, 2), "ring": (2, 1)}


def _round(x, travel):
    return precision.round_trip(x, travel)


@contextlib.contextmanager
def emulated(mode: str, comm_dtype, fp8_keys: bool, only=None, stats: dict | None = None):
    """SDPA (torch's, which the one-process model calls) rounded as `mode`'s communication does."""
    ring, ulysses = MODES[mode]
    original = F.scaled_dot_product_attention

    def travel(name, dtype):
        if only is not None and name not in only:
            return None
        return precision.travel_dtype(comm_dtype, dtype, key=name == "k", fp8_keys=fp8_keys)

    def sdpa(query, key, value, *args, **kwargs):  # (B, H, S, D): a row of head_dim is the last dim
        q, k, v = query, key, value
        if stats is not None and q.shape[-2] == k.shape[-2]:
            s = (q[:, :, :512] @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            stats.setdefault("score_std", []).append(s.std().item())
            stats.setdefault("max_weight", []).append(s.softmax(-1).amax(-1).mean().item())
        if comm_dtype is None or q.shape[-2] != k.shape[-2]:
            return original(q, k, v, *args, **kwargs)
        if ulysses > 1:
            q, k, v = _round(q, travel("q", q.dtype)), _round(k, travel("k", k.dtype)), _round(v, travel("v", v.dtype))
        if ring > 1:
            k, v = _round(k, travel("k", k.dtype)), _round(v, travel("v", v.dtype))
        out = original(q, k, v, *args, **kwargs)
        return _round(out, travel("out", out.dtype)) if ulysses > 1 else out

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Scale the random weights so that activations look like a trained DiT's (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    attention_or_ff = ("attn", "ff", "proj_mlp", "proj_out", "ffn")
    with torch.no_grad():
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, torch.nn.Linear) and any(part in name for part in attention_or_ff) \
                    and name not in ("proj_out",):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / math.sqrt(module.weight.shape[1]))
            qk_norm = leaf in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")
            if qk_norm and getattr(module, "weight", None) is not None:
                gains = torch.full(module.weight.shape, 1.6)
                gains[torch.randperm(gains.numel(), generator=g)[: max(1, gains.numel() // 16)]] = 6.0
                module.weight.copy_(gains)
    return model


def build(family: str):
    """(model, inputs, step) for a tiny Flux or Wan with real head_dim 128; step(x, sigma) -> velocity."""
    from cp_hooks.verify.catalogue import get_entry

    g = torch.Generator().manual_seed(1)
    if family == "flux":
        from cp_hooks.verify.models.flux import _flux

        model, _ = get_entry("FluxTransformer2DModel").build("t2i", overrides=dict(
            num_layers=2, num_single_layers=2, attention_head_dim=128, num_attention_heads=4,
            axes_dims_rope=(16, 56, 56), joint_attention_dim=64, pooled_projection_dim=64))
        inputs = _flux(dict(model.config), g, text=32, height=16, width=16)

        def step(x, sigma):
            return model(**dict(inputs, hidden_states=x, timestep=torch.full((1,), sigma)))[0]
    else:
        from cp_hooks.verify.models.wan import _wan

        model, _ = get_entry("WanTransformer3DModel").build("t2v", overrides=dict(
            num_layers=4, attention_head_dim=128, num_attention_heads=4, ffn_dim=1024, text_dim=64))
        inputs = _wan(dict(model.config), g, frames=2, height=16, width=32, text=32)

        def step(x, sigma):
            return model(**dict(inputs, hidden_states=x, timestep=torch.full((1,), 1000.0 * sigma)))[0]
    return trained_like(model), inputs, step


def blocks_of(model):
    names = ("transformer_blocks", "single_transformer_blocks", "blocks")
    return [(f"{n}.{i}", b) for n in names for i, b in enumerate(getattr(model, n, []))]


def per_block_outputs(model, step, x, sigma) -> dict[str, torch.Tensor]:
    """Each block's output (the image stream's, for Flux's double blocks) in one forward."""
    outputs, handles = {}, []
    for name, block in blocks_of(model):
        def hook(module, args, out, name=name):
            out = out[-1] if isinstance(out, tuple) else out  # Flux double blocks: (text, image)
            outputs[name] = out.detach().clone()
        handles.append(block.register_forward_hook(hook))
    try:
        step(x, sigma)
    finally:
        for h in handles:
            h.remove()
    return outputs


def denoise(step, noise, steps: int) -> torch.Tensor:
    """Flow-matching Euler from sigma 1 to 0."""
    x = noise.clone()
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * step(x, s)
    return x


def rel_l2(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def wire_ratio(head_dim: int = 128) -> dict[str, dict[str, float]]:
    """Attention bytes against bf16 communication, by scheme, from the wire formats (comm_stats counts exactly
    these: tests/test_comm_precision.py::test_bytes_match_formula)."""
    def row(comm_dtype, fp8_keys, key):
        travel = precision.travel_dtype(comm_dtype, torch.float32, key=key, fp8_keys=fp8_keys)
        return precision.wire_bytes_per_row(head_dim, torch.float32, travel)

    result = {}
    for name in ("bf16", "fp16", "fp8 e4m3, bf16 keys", "fp8 e4m3 keys"):
        comm_dtype, keys, _ = SCHEMES[name]
        base_u, base_r = 4 * row(torch.bfloat16, False, False), 2 * row(torch.bfloat16, False, False)
        ulysses = 3 * row(comm_dtype, keys, False) + row(comm_dtype, keys, True)  # q, v, out + k
        ring = row(comm_dtype, keys, True) + row(comm_dtype, keys, False)  # K + V
        fp32 = 4 * row(None, False, False)
        result[name] = {"ulysses vs bf16": ulysses / base_u, "ring vs bf16": ring / base_r,
                        "ulysses vs fp32": ulysses / fp32}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", default="flux,wan")
    parser.add_argument("--modes", default="ulysses,ring")
    parser.add_argument("--schemes", default=None, help="names of SCHEMES separated by \";\" (default: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"bytes": wire_ratio(), "models": {}}
    print("attention bytes per rank, head_dim 128:")
    for name, r in report["bytes"].items():
        print(f"  {name:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()))
    for family in args.families.split(","):
        started = time.perf_counter()
        model, inputs, step = build(family)
        noise = torch.randn(inputs["hidden_states"].shape, generator=torch.Generator().manual_seed(7))
        stats: dict = {}
        with torch.no_grad():
            with emulated("ulysses", None, False, stats=stats):
                full_blocks = per_block_outputs(model, step, noise, 0.5)
            full_final = denoise(step, noise, args.steps)
            entry = {"score_std": sum(stats["score_std"]) / len(stats["score_std"]),
                     "max_weight": sum(stats["max_weight"]) / len(stats["max_weight"]),
                     "tokens": inputs["hidden_states"].shape, "results": {}}
            print(f"\n{family}: attention score std {entry['score_std']:.2f}, mean largest softmax weight "
                  f"{entry['max_weight']:.3f}")
            for mode in args.modes.split(","):
                for name, (comm_dtype, keys, only) in SCHEMES.items():
                    if args.schemes and name not in args.schemes.split(";"):
                        continue
                    if mode == "ring" and (only is not None or "e5m2" in name):
                        continue  # the single-tensor rows are Ulysses' (the ring rounds K and V only)
                    with emulated(mode, comm_dtype, keys, only):
                        blocks = per_block_outputs(model, step, noise, 0.5)
                        final = denoise(step, noise, args.steps)
                    per_block = {b: rel_l2(blocks[b], full_blocks[b]) for b in full_blocks}
                    entry["results"][f"{mode} / {name}"] = {"per_block": per_block,
                                                            "final": rel_l2(final, full_final)}
                    print(f"  {mode:7s} {name:22s} final latent {rel_l2(final, full_final):.2e}   per block "
                          + " ".join(f"{e:.1e}" for e in per_block.values()))
        entry["tokens"] = list(entry["tokens"])
        report["models"][family] = entry
        print(f"  ({time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()

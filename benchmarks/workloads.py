"""What is benchmarked: tiny-config diffusers models at given token counts, and bare attention shapes.

Every rank builds the same model and inputs from the same seeds (nothing is downloaded). A `Workload`
also says which attention calls of one forward are context-parallel — (sequence length, hidden size) per
call — so that the measured bytes can be compared with the formulas of docs/architecture.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field

import torch


@dataclass
class Workload:
    """A model (or None for attention-only) with its inputs and the shape of its parallel attention calls."""

    name: str
    family: str  # "flux", "wan", "attention" or the --model name
    tokens: int  # the full sequence of the parallel attention
    model: torch.nn.Module | None
    inputs: dict
    attn_calls: list[tuple[int, int]] = field(default_factory=list)  # (L, hidden) per parallel attention call
    heads: int = 0
    batch: int = 1
    description: str = ""


def flux(image_tokens: int, device, dtype, *, text_len=64, layers=1, heads=4, head_dim=64) -> Workload:
    """FluxTransformer2DModel with a tiny config: `layers` double- and single-stream blocks each."""
    from diffusers import FluxTransformer2DModel

    side = int(math.isqrt(image_tokens))
    h, w = side, image_tokens // side
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=layers, num_single_layers=layers, attention_head_dim=head_dim,
        num_attention_heads=heads, joint_attention_dim=128, pooled_projection_dim=128, guidance_embeds=True,
        axes_dims_rope=(head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8),
    ).to(device, dtype).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    inputs = dict(
        hidden_states=torch.randn(1, h * w, 64, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, text_len, 128, generator=g).to(device, dtype),
        pooled_projections=torch.randn(1, 128, generator=g).to(device, dtype),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),
        guidance=torch.tensor([3.5], device=device, dtype=dtype),
        img_ids=ids.reshape(-1, 3).to(device), txt_ids=torch.zeros(text_len, 3, device=device), return_dict=False,
    )
    tokens = h * w + text_len  # joint attention: text and image tokens together
    return Workload(f"flux-{_k(h * w)}", "flux", tokens, model, inputs, [(tokens, heads * head_dim)] * (2 * layers),
                    heads, description=f"Flux {layers}+{layers} blocks, {heads}x{head_dim} heads, {h}x{w} image + "
                                       f"{text_len} text tokens")


def wan(frames: int, height: int, width: int, device, dtype, *, text_len=64, layers=2, heads=4,
        head_dim=64) -> Workload:
    """WanTransformer3DModel (tiny config) on a latent video of frames x height x width (patch 1x2x2)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
        text_dim=128, freq_dim=64, ffn_dim=4 * heads * head_dim, num_layers=layers, cross_attn_norm=True,
    ).to(device, dtype).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 16, frames, height, width, generator=g).to(device, dtype),
        timestep=torch.tensor([500.0], device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(1, text_len, 128, generator=g).to(device, dtype), return_dict=False,
    )
    tokens = frames * (height // 2) * (width // 2)
    # Self-attention is parallel; the text cross-attention runs locally (replicated keys): no communication.
    return Workload(f"wan-{frames}x{height}x{width}", "wan", tokens, model, inputs,
                    [(tokens, heads * head_dim)] * layers, heads,
                    description=f"Wan {layers} blocks, {heads}x{head_dim} heads, latent video {frames}x{height}x"
                                f"{width} (patch 1x2x2) = {tokens} tokens, {text_len} text tokens")


def attention(tokens: int, device, dtype, *, heads=4, head_dim=64, batch=1) -> Workload:
    """Bare attention: full q, k, v of (batch, tokens, heads, head_dim); ranks take their shards."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(batch, tokens, heads, head_dim, generator=g).to(device, dtype) for _ in range(3))
    return Workload(f"attn-{_k(tokens)}", "attention", tokens, None, dict(q=q, k=k, v=v),
                    [(tokens, heads * head_dim)], heads, batch,
                    description=f"attention alone, {batch}x{tokens} tokens, {heads}x{head_dim} heads")


def custom(spec: str, device, dtype) -> Workload:
    """`--model module:function` or `path/to/file.py:function`; the function takes (device, dtype) and
    returns a Workload, or (model, inputs) — then bytes are reported without a formula."""
    target, _, fn_name = spec.rpartition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location("benchmark_custom_model", target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    built = getattr(module, fn_name)(device, dtype)
    if isinstance(built, Workload):
        return built
    model, inputs = built
    return Workload(fn_name, fn_name, 0, model.to(device).eval(), inputs, description=f"--model {spec}")


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)

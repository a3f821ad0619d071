"""The VAE's spatial self-attention over a slab: local queries, keys and values of every rank's rows.

The mid-block attention of these VAEs is single- or few-headed self-attention over all positions of an
image (or of each frame). A rank holds the queries of its rows; it needs the keys and values of all rows.
They are all-gathered once per call (payload "vae_attention": `2·(N-1)/N` of the full K and V per rank,
what a ring would also move) and the rank's queries attend to them with the same
`scaled_dot_product_attention` call as the whole image — exact, no LSE merge needed. The tokens of a slab
are a contiguous run of the row-major token order (rows `[start, stop)` x all columns), so the gathered
keys are in the whole image's order.

Two forms are patched: diffusers' `Attention` (AutoencoderKL, Flux2, ...) through a processor (restored
on disable), and Wan/QwenImage's `*AttentionBlock` (per-frame, one head) through its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cp_hooks import comm
from cp_hooks.vae import slab

ATTENTION_PAYLOAD = "vae_attention"


def gather_rows(t: torch.Tensor, row_sizes: list[int], width: int, layout: slab.SlabLayout, dim: int) -> torch.Tensor:
    """All-gather a tensor whose `dim` holds tokens of `rows x width` along the slab layout's ranks.

    Args:
        t: this rank's tensor.
        row_sizes: every rank's slab height.
        width: tokens per row.
        layout: the active layout.
        dim: the token dimension.

    Returns:
        The tensor with every rank's tokens along `dim`, in global row order.
    """
    return comm.all_gather(t, [r * width for r in row_sizes], layout.group, dim=dim, payload=ATTENTION_PAYLOAD)


class SlabAttnProcessor:
    """diffusers' `AttnProcessor2_0` for a VAE's spatial self-attention, with keys/values of all ranks.

    Outside a parallel call it defers to the processor it replaced, so the module behaves exactly as before.

    Args:
        previous: the processor it replaces (restored by `disable_vae_parallelism`).
    """

    def __init__(self, previous) -> None:
        self.previous = previous

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        layout = slab.current()
        if layout is None:
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if hidden_states.ndim != 4 or encoder_hidden_states is not None or attention_mask is not None:
            raise RuntimeError("cp_hooks VAE parallelism: the slab attention handles unmasked self-attention on "
                               "(B, C, H, W) feature maps only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        batch, channels, height, width = hidden_states.shape
        _, _, sizes = layout.rows(height)
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        # Every query attends to every position of the image: gather the keys and values of all rows.
        key = gather_rows(key, sizes, width, layout, dim=2)
        value = gather_rows(value, sizes, width, layout, dim=2)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def make_wan_attention_forward(module, inner):
    """A forward for Wan's / QwenImage's `*AttentionBlock` (per-frame one-head attention) on a slab.

    Args:
        module: the attention block (`norm`, `to_qkv`, `proj`).
        inner: its previous forward.

    Returns:
        The replacement forward.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        layout = slab.current()
        if layout is None:
            return inner(x)
        identity = x
        batch, channels, time, height, width = x.shape
        _, _, sizes = layout.rows(height)
        x = x.permute(0, 2, 1, 3, 4).reshape(batch * time, channels, height, width)
        x = module.norm(x)
        qkv = module.to_qkv(x).reshape(batch * time, 1, channels * 3, -1).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        # Each frame's queries attend to all positions of that frame: gather keys and values of all rows.
        k = gather_rows(k.contiguous(), sizes, width, layout, dim=2)
        v = gather_rows(v.contiguous(), sizes, width, layout, dim=2)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.squeeze(1).permute(0, 2, 1).reshape(batch * time, channels, height, width)
        x = module.proj(x)
        x = x.view(batch, time, channels, height, width).permute(0, 2, 1, 3, 4)
        return x + identity

    forward.__name__ = "forward"
    forward.__qualname__ = f"cp_hooks.vae.attention.wan_attention_forward[{type(module).__name__}]"
    return forward


WAN_ATTENTION_CLASSES = ("WanAttentionBlock", "QwenImageAttentionBlock")

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

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        layout = slab.current()
        if layout is None:
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if (
            encoder_hidden_states is not None
            or hidden_states.ndim not in (3, 4)
            or ((hidden_states.ndim == 3) != (attention_mask is not None))
        ):
            raise RuntimeError(
                "cp_hooks VAE parallelism: the slab attention handles spatial self-attention on "
                "(B, C, H, W) maps, or on (B, frames*H*W, C) tokens with a frame-causal mask"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        frame_mask = None
        if hidden_states.ndim == 4:
            batch, channels, height, width = hidden_states.shape
            _, _, sizes = layout.rows(height)
            frames, rank_tokens = 1, [r * width for r in sizes]  # tokens per frame of every rank
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        else:
            batch, length, channels = hidden_states.shape
            frames, frame_tokens = _frame_causal_structure(attention_mask)
            own = layout.units[layout.rank]
            rank_tokens = [frame_tokens * u // own for u in layout.units]
            # Query i (frame i // frame_tokens) sees key j of the gathered frames iff frame(j) <= frame(i).
            total = sum(rank_tokens)
            q_frame = torch.arange(length, device=hidden_states.device) // frame_tokens
            k_frame = torch.arange(frames * total, device=hidden_states.device) // total
            frame_mask = k_frame[None, :] <= q_frame[:, None]
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
        # Every query attends to every position of the image (of each visible frame): gather the keys and values
        # of all ranks' rows, per frame, so the gathered tokens are in the whole map's (frame, row, column) order.
        key = _gather_frames(key, frames, rank_tokens, layout)
        value = _gather_frames(value, frames, rank_tokens, layout)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=frame_mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if residual.ndim == 4:
            out = out.transpose(-1, -2).reshape(residual.shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _gather_frames(t: torch.Tensor, frames: int, rank_tokens: list[int], layout: slab.SlabLayout) -> torch.Tensor:
    """(B, heads, frames*local, D) -> (B, heads, frames*total, D): every rank's tokens of each frame."""
    batch, heads, _, dim = t.shape
    t = t.reshape(batch, heads, frames, -1, dim)
    t = comm.all_gather(t.contiguous(), rank_tokens, layout.group, dim=3, payload=ATTENTION_PAYLOAD)
    return t.reshape(batch, heads, -1, dim)


def _frame_causal_structure(mask: torch.Tensor) -> tuple[int, int]:
    """(frames, tokens per frame) of a frame-causal mask (HunyuanVideo's), checked element by element.

    Raises:
        RuntimeError: the mask is not frame-causal (a rank's local mask would not say what to do with the
            other ranks' keys).
    """
    allowed = (
        (mask.reshape(-1, mask.shape[-2], mask.shape[-1])[0] == 0)
        if mask.dtype != torch.bool
        else mask.reshape(-1, mask.shape[-2], mask.shape[-1])[0]
    )
    length = allowed.shape[-1]
    frame_tokens = int(allowed[0].sum())
    index = torch.arange(length, device=mask.device) // max(frame_tokens, 1)
    if frame_tokens == 0 or length % frame_tokens or not torch.equal(allowed, index[None, :] <= index[:, None]):
        raise RuntimeError(
            "cp_hooks VAE parallelism: an attention mask that is not frame-causal cannot be split over image rows"
        )
    return length // frame_tokens, frame_tokens


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

# diffusers processors of the VAEs' attention: spatial ones get the slab processor; temporal ones (Mochi's
# attention runs over the frames of each position: every rank holds whole sequences) stay as they are.
SPATIAL_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor")
LOCAL_PROCESSORS = ("MochiVaeAttnProcessor2_0",)

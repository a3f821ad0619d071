"""Kandinsky 5 (Kandinsky5Transformer3DModel): the video is split along its height, the text stays whole.

The model keeps the video as a (batch, frames, height, width, dim) grid until the blocks: `forward` computes
the 3-D rotary table from that grid's shape and the pipeline's per-axis positions `visual_rope_pos`, flattens
both, runs the blocks, and reshapes the tokens back to the grid's shape before the output layer. So the split
is along the height rows of the patch embedding's output (every rank holds whole rows of every frame; images
have one frame, so the frames cannot be split), together with the height positions (`visual_rope_pos[1]`): the
table, the flattening and the reshape then all see the local grid, and the output layer's result is gathered
along its height. Attention does not depend on the order of its keys, so the per-rank row blocks are exact.

The Qwen text runs through its own encoder blocks (self-attention over the whole text, replicated) and is
the replicated key set of the visual blocks' cross-attention: Kandinsky's processor passes its config for
every call, so both are marked LocalAttention(). Refused: `attention_type="nabla"`, whose sparse attention
builds a flex BlockMask from the pooled scores of all queries against all keys (a query x key mask).

Kandinsky 6 SR (Kandinsky6SRTransformer3DModel): every self-attention is NABLA sparse attention. `forward`
reorders the tokens into 8x8 spatial tiles of 64 consecutive tokens (`_local_patch`, the rotary table alike) and
builds the sliding-tile prior `sta_mask` over the (frames, height / 8, width / 8) tile grid; the processor pools
each tile's queries and keys (mean over its 64 tokens, per head), softmaxes the pooled scores of every query tile
against every key tile, keeps the tiles above the 1 - threshold cumulative tail, ORs in the prior, and attends
through a flex BlockMask whose selected 64 x 64 blocks are full (a per-head query x key mask). The plan splits
the tile-ordered tokens at the first block (tag "tiles") and their rotary table in every block, so each rank holds
consecutive whole tiles in the mask's order, and gathers at the last block's output, before `_local_merge`. Every
attention module gets a processor of the plan's own (ContextParallelProcessor): each rank pools its own tiles,
all-gathers the pooled queries and keys (B x heads x tiles x head_dim, tiny) over the context-parallel group,
computes the same block selection as diffusers, and attends one head at a time through context_parallel_attention
with that head's selection expanded to a whole-sequence token mask (B, 1, S, S): the core takes whole masks
shared by all heads only, and Ulysses scatters heads, so each call repeats its head once per Ulysses rank (with
Ulysses every rank of a group computes the same head: the attention work is not divided by the Ulysses degree,
only by the ring's). The tile count must divide evenly over the ranks (refused with an error otherwise).
"""

from __future__ import annotations

import math

import torch

from cp_hooks import comm
from cp_hooks.attention import context_parallel_attention
from cp_hooks.forward.lengths import shard_sizes
from cp_hooks.plans.specs import (
    ContextParallelInput,
    ContextParallelOutput,
    ContextParallelProcessor,
    LocalAttention,
    PlanDeclaration,
    UnsupportedConfig,
)

_ROWS = ContextParallelInput(split_dim=2, expected_dims=5, split_output=True)

KANDINSKY5 = {
    "": {"visual_rope_pos": [None, ContextParallelInput(split_dim=0, expected_dims=1), None]},
    "visual_embeddings": {0: _ROWS},
    "text_transformer_blocks.*.self_attention": LocalAttention(),
    "visual_transformer_blocks.*.cross_attention": LocalAttention(),
    "out_layer": ContextParallelOutput(gather_dim=2, expected_dims=5),
}

_REFUSED_K5 = (
    UnsupportedConfig(
        "",
        "config.attention_type",
        ("nabla",),
        "its sparse (nabla) attention builds a flex BlockMask from the pooled scores of all queries "
        "against all keys, a query x key mask that cannot be split.",
    ),
)


# Kandinsky 6: the flattened video is split at the first fused block and gathered at the last one (see the
# module docstring); the audio is split from its embedding to its output layer.
_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=5)  # (seq, 1, head_dim / 2, 2, 2) rotation matrices

KANDINSKY6 = {
    "video_text_transformer_blocks.*.attn": LocalAttention(),
    "audio_text_transformer_blocks.*.attn": LocalAttention(),
    "visual_transformer_blocks.0": {"vis": _TOKENS},
    "visual_transformer_blocks.*": {"vis_rope": _TABLE},
    "visual_transformer_blocks.*.video_dec_block.cross_attention": LocalAttention(),
    "visual_transformer_blocks.*.audio_dec_block.cross_attention": LocalAttention(),
    # Output 1 (the audio) is already split and may be None (video only): only the video is gathered here.
    "visual_transformer_blocks.-1": [ContextParallelOutput(gather_dim=1, expected_dims=3)],
    "audio_embeddings": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "audio_rope_embeddings": {0: ContextParallelInput(split_dim=0, expected_dims=5, split_output=True)},
    "audio_out_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


# Kandinsky 6 SR: NABLA sparse self-attention, served through a processor of the plan's own (see the module
# docstring, "Kandinsky 6 SR").
_TILE = 64  # tokens of one 8x8 tile: NABLA's block size, the same for queries and keys


def _sr_qkv(attn, hidden_states, rotary_emb):
    """Kandinsky6SRAttnProcessor's queries, keys and values, (B, S, heads, head_dim), from the tokens it gets."""
    from diffusers.models.transformers.transformer_kandinsky6_sr import apply_rotary

    query = attn.to_query(hidden_states).unflatten(-1, (attn.num_heads, -1))
    key = attn.to_key(hidden_states).unflatten(-1, (attn.num_heads, -1))
    value = attn.to_value(hidden_states).unflatten(-1, (attn.num_heads, -1))
    query = attn.query_norm(query.float()).type_as(query)
    key = attn.key_norm(key.float()).type_as(key)
    return apply_rotary(query, rotary_emb), apply_rotary(key, rotary_emb), value


def _tile_means(x: torch.Tensor) -> torch.Tensor:
    """(B, S, H, D) -> (B, H, S / 64, D): each tile's mean, computed as `nabla_block_mask` computes it."""
    x = x.detach().transpose(1, 2)
    b, h, s, d = x.shape
    return x.reshape(b, h, s // _TILE, _TILE, d).mean(-2)


def _nabla_blocks(qa: torch.Tensor, ka: torch.Tensor, sta: torch.Tensor, thr: float) -> torch.Tensor:
    """`nabla_block_mask`'s block selection, (B, H, tiles, tiles) boolean (True = the query tile attends to the
    whole key tile): the smallest pooled scores whose cumulative sum stays below 1 - thr are dropped, then the
    sliding-tile prior is added. The same operations on the same values as diffusers' (the flex BlockMask it
    builds from them marks every selected block full, mask_mod=None)."""
    ka = ka.transpose(-2, -1)
    attn_map = torch.softmax((qa @ ka) / math.sqrt(qa.shape[-1]), dim=-1)
    vals, inds = attn_map.sort(-1)
    mask = (vals.cumsum_(-1) >= 1 - thr).int().gather(-1, inds.argsort(-1))
    return torch.logical_or(mask, sta)


def _token_mask(blocks: torch.Tensor) -> torch.Tensor:
    """A (..., tiles, tiles) block mask expanded to its (..., S, S) token mask (tiles are 64 consecutive tokens)."""
    return blocks.repeat_interleave(_TILE, dim=-2).repeat_interleave(_TILE, dim=-1)


class Kandinsky6SRContextParallelProcessor:
    """Kandinsky6SRAttnProcessor's NABLA attention, computed from this rank's shard of the tile-ordered tokens.

    Every rank pools its own whole tiles, all-gathers the pooled queries and keys (B x heads x tiles x head_dim
    each, small) over the context-parallel group, selects the same blocks as the one-process processor, and
    attends head by head with that head's block mask expanded to a whole-sequence token mask (B, 1, S, S).
    """

    def __init__(self, attn, original, runtime) -> None:
        self.runtime = runtime

    def __call__(self, attn, hidden_states, rotary_emb, sparse_params):
        rt = self.runtime
        query, key, value = _sr_qkv(attn, hidden_states, rotary_emb)
        whole = rt.split_lengths.named["tiles"]
        sizes = shard_sizes(whole, rt.world_size)
        if len(set(sizes)) > 1 or sizes[0] % _TILE:  # shapes only: raised alike on every rank
            raise ValueError(
                f"Kandinsky6SRTransformer3DModel's NABLA attention pools whole 8x8 tiles of {_TILE} tokens: the "
                f"{whole // _TILE} tiles of this input do not divide evenly over {rt.world_size} ranks (shards "
                f"{sizes}). Use a tile grid (frames x height / 8 x width / 8 tokens) divisible by the degree."
            )
        # Pooled queries and keys of every tile, in sequence order: rank r of the flat group holds shard r (the
        # selection takes no gradient).
        stats = comm.all_gather(torch.stack([_tile_means(query), _tile_means(key)]), None, rt.flat_group, dim=3)
        blocks = _nabla_blocks(stats[0], stats[1], sparse_params["sta_mask"], sparse_params["threshold"])
        # The mask differs between heads, and a whole-sequence mask is shared by the heads of one call: one call
        # per head. Ulysses scatters heads, so the head is repeated once per Ulysses rank (copy 0 is kept).
        u = rt.ulysses_degree
        outs = []
        for h in range(query.shape[2]):
            q, k, v = (t[:, :, h : h + 1].expand(-1, -1, u, -1).contiguous() for t in (query, key, value))
            out = context_parallel_attention(q, k, v, _token_mask(blocks[:, h : h + 1]), config=rt)
            outs.append(out[:, :, :1])
        return attn.out_layer(torch.cat(outs, dim=2).flatten(2, 3))


# The tokens reach the blocks already reordered into 8x8 tiles (forward's `_local_patch`), the order of NABLA's
# blocks: the split takes consecutive whole tiles, the rotary table (S, 1, head_dim / 2, 2, 2) likewise.
KANDINSKY6_SR = {
    "visual_transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="tiles")},
    "visual_transformer_blocks.*": {"rotary_emb": ContextParallelInput(split_dim=0, expected_dims=5)},
    "visual_transformer_blocks.*.self_attention": ContextParallelProcessor(Kandinsky6SRContextParallelProcessor),
    "visual_transformer_blocks.-1": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "Kandinsky5Transformer3DModel": PlanDeclaration(plan=KANDINSKY5, unsupported=_REFUSED_K5),
    "Kandinsky6Transformer3DModel": PlanDeclaration(plan=KANDINSKY6),
    "Kandinsky6SRTransformer3DModel": PlanDeclaration(plan=KANDINSKY6_SR),
}

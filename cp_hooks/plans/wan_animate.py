"""Wan Animate (Wan 2.2 Animate, 2): character animation on the Wan 2.1 backbone.

WanAnimateTransformer3DModel: the pose latents are added to the video's patch embedding in `forward`, before
anything is split, and the video is split at the first block with the rotary table (computed for the whole
grid) split like it; the text + CLIP image context is replicated and the Wan processor runs that
cross-attention locally. The face adapter (after every `inject_face_latents_blocks`-th block) attends per
latent frame: it reshapes its queries to (frames, tokens per frame) and pairs frame t with the t-th group of
face-motion tokens. A rank's shard does not hold whole frames (21 latent frames at full size do not divide the
degrees), so the adapter's queries are gathered (at its query pre-norm, a per-token LayerNorm), it runs
whole on every rank with its attention local (the motion tokens are replicated), and its output projection's
result is split again before it is added to the split video tokens. Everything else runs split.

WanAnimate2Transformer3DModel: one segment of the pipeline (modular_pipelines/wan_animate_2) is a reference pass
(`kv_cache_mode="extract"`: the driving-video latents, dense self-attention; every layer caches its pre-rotary
keys and values) followed by denoising steps (`"cached"`, conditional and unconditional: one latent frame more, for
the reference image's slot). The generation self-attention scatters its tokens and the cached reference frame by
frame into buffers sized for the full video and attends through a flex BlockMask: every generation key for every
query, and reference frame t - 1 for the queries of generation frame t. Both passes apply the rotary table inside
the processor from the whole grid (`rope_apply` rotates the first frames*height*width rows of what it gets).

No split of the processor's inputs serves that, so the plan gives every self-attention a processor of its own
(`ContextParallelProcessor`, `WanAnimate2ContextParallelProcessor`): it rotates the rows of this rank's tokens (its
shard's offset from the whole length of the tagged split at the first block), caches this rank's part of the
reference keys and values (marked with its offset; a cache written by one process is sliced instead), and in the
generation pass attends over [its generation shard, its reference part] with the BlockMask's pattern as a boolean
mask over the whole sequence, its key columns in the ranks' order, through `context_parallel_attention`. The tokens
are split at the first block and gathered at `head`; the text and CLIP cross-attention runs locally
(`LocalAttention`: its processor passes its parallel config for every call). Only the pipeline's geometry is served
(segment grid = the full video's, which leaves no zero-filled buffer slots that the BlockMask would admit); any
other raises on every rank. Uneven shards of the generation pass give the ranks different key counts: the anything
flags. The catalogue checks the reference pass with gradients. The generation pass is `GENERATION_ENTRIES` (in
`cp_hooks.verify.models.wan_animate`), outputs and gradients: diffusers' processor attends through flex attention,
which has no backward on CPU, so that entry's `prepare` installs `WanAnimate2ReferenceProcessor` as the one-process
reference, diffusers' processor line for line (rope, packing, cache) with the flex call replaced by SDPA under a
dense boolean mask, the model's `create_mask` logic at every packed (query, key): tests/test_wan_animate2.py shows
that mask equal to the BlockMask's (its mask_mod, and its `to_dense()` per block) and the twin's outputs equal to
diffusers' (fp32, within 1e-6; measured 3e-7), and runs extract-then-generate under every mode against diffusers'
own processor.
"""

from __future__ import annotations

import torch

from cp_hooks.attention import context_parallel_attention
from cp_hooks.attention.masks import SameInputsMemo
from cp_hooks.forward.lengths import shard_sizes
from cp_hooks.plans.specs import (
    ContextParallelInput,
    ContextParallelOutput,
    ContextParallelProcessor,
    LocalAttention,
    PlanDeclaration,
)

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)

WAN_ANIMATE = {
    "rope": {0: _ROPE, 1: _ROPE},
    "blocks.0": {"hidden_states": _TOKENS},
    # The face adapter needs whole frames: gather its queries, run it locally, split its output again.
    "face_adapter.*": LocalAttention(),
    "face_adapter.*.pre_norm_q": _GATHER,
    "face_adapter.*.to_out": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "proj_out": _GATHER,
}


def _self_attention_qkv(attn, hidden_states):
    """WanAnimate2AttnProcessor's normed queries, keys and values, (B, S, heads, head_dim), before the rotary."""
    from diffusers.models.transformers.transformer_wan_animate_2 import _get_qkv_projections

    query, key, value = _get_qkv_projections(attn, hidden_states, None)
    query, key = attn.norm_q(query), attn.norm_k(key)
    return tuple(t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))


class WanAnimate2ContextParallelProcessor:
    """WanAnimate2AttnProcessor's self-attention, computed from this rank's shard of the tokens.

    Extract (reference) pass: dense attention; the rotary rows of this rank's tokens; the cache keeps this rank's
    part of the pre-rotary reference keys and values (marked with its offset and the whole length). Generation
    pass: keys [this rank's generation shard, its part of the cached reference], and a boolean mask over the whole
    sequence (the same on every rank), its columns in the order of the ranks' key pieces: every generation key for
    every query, reference frame t - 1 for the queries of generation frame t — what the flex BlockMask computes.
    """

    def __init__(self, attn, original, runtime) -> None:
        self.original = original
        self.runtime = runtime

    def _sizes(self, whole: int) -> list[int]:
        return shard_sizes(whole, self.runtime.world_size)

    def _shard(self, whole: int) -> tuple[int, int]:
        """(offset, length) of this rank's piece of a sequence of `whole` tokens."""
        sizes = self._sizes(whole)
        rank = self.runtime.rank
        return sum(sizes[:rank]), sizes[rank]

    def __call__(
        self,
        attn,
        hidden_states,
        rotary_emb,
        grid_sizes,
        kv_cache,
        kv_cache_mode,
        rope_stride=1,
        reference_rotary_emb=None,
        reference_grid_sizes=None,
        reference_rope_stride=1,
        attention_mask=None,
        origin_latent_frames=None,
        origin_latent_hw=None,
    ):
        query, key, value = _self_attention_qkv(attn, hidden_states)
        whole = self.runtime.split_lengths.named["wan_animate2_tokens"]  # this pass's whole token count
        offset, _ = self._shard(whole)

        if kv_cache_mode == "extract":
            kv_cache.store(key, value)
            kv_cache.cp_part = (key, offset, whole)  # which rows of the reference this rank's cache holds
            query = _rope_rows(query, grid_sizes, rotary_emb, rope_stride, offset).type_as(value)
            key = _rope_rows(key, grid_sizes, rotary_emb, rope_stride, offset).type_as(value)
            out = context_parallel_attention(query, key, value, config=self.runtime)
        elif kv_cache_mode == "cached":
            query = _rope_rows(query, grid_sizes, rotary_emb, rope_stride, offset).type_as(value)
            key = _rope_rows(key, grid_sizes, rotary_emb, rope_stride, offset).type_as(value)
            key_ref, value_ref = kv_cache.get()
            part = getattr(kv_cache, "cp_part", None)
            if part is not None and part[0] is key_ref:  # written by this plan's extract pass: this rank's rows
                ref_offset, ref_whole = part[1], part[2]
            else:  # written by one process (whole): keep this rank's rows
                ref_whole = key_ref.shape[1]
                ref_offset, length = self._shard(ref_whole)
                key_ref = key_ref[:, ref_offset : ref_offset + length]
                value_ref = value_ref[:, ref_offset : ref_offset + length]
            key_ref = _rope_rows(
                key_ref, reference_grid_sizes, reference_rotary_emb, reference_rope_stride, ref_offset
            ).type_as(value)
            gen_sizes, ref_sizes = self._sizes(whole), self._sizes(ref_whole)
            counts = [g + r for g, r in zip(gen_sizes, ref_sizes)]
            if len(set(counts)) > 1 and not self.runtime.anything:
                raise ValueError(
                    "WanAnimate2Transformer3DModel's generation pass attends over each rank's generation shard plus "
                    f"its part of the cached reference, {counts} keys on the ranks; uneven key counts need "
                    "ContextParallelConfig(ulysses_anything=True) / ring_anything=True."
                )
            mask = _MASKS.get(
                (
                    grid_sizes,
                    reference_grid_sizes,
                    origin_latent_frames,
                    origin_latent_hw,
                    whole,
                    gen_sizes,
                    ref_sizes,
                    query.device,
                ),
                lambda: _generation_mask(
                    grid_sizes,
                    reference_grid_sizes,
                    origin_latent_frames,
                    origin_latent_hw,
                    whole,
                    gen_sizes,
                    ref_sizes,
                    query.device,
                ),
            )
            key, value = torch.cat([key, key_ref], dim=1), torch.cat([value, value_ref], dim=1)
            out = context_parallel_attention(query, key, value, mask, config=self.runtime)
        else:
            raise ValueError(f"`kv_cache_mode` must be either 'extract' or 'cached', got {kv_cache_mode}.")

        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def _rope_rows(x, grid_sizes, freqs, stride: int, offset: int) -> torch.Tensor:
    """diffusers' `rope_apply` for the rows [offset, offset + x.shape[1]) of the whole grid's sequence: the same
    float64 products, so the same values; rows past the grid's tokens pass unrotated, as there."""
    n, c = x.size(2), x.size(3) // 2
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    output = []
    for i, (f, h, w) in enumerate(grid_sizes.tolist()):
        table = torch.cat(
            [
                parts[0][: f * stride : stride].view(f, 1, 1, -1).expand(f, h, w, -1),
                parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
            ],
            dim=-1,
        ).reshape(f * h * w, 1, -1)
        rows = table[offset : offset + x.size(1)]
        k = rows.shape[0]
        x_i = torch.view_as_complex(x[i, :k].to(torch.float64).reshape(k, n, -1, 2))
        output.append(torch.cat([torch.view_as_real(x_i * rows).flatten(2), x[i, k:]]))
    return torch.stack(output).float()


# The mask is the same in every layer of a forward (built from the grids `forward` hands every layer).
_MASKS = SameInputsMemo()


def _generation_mask(
    grid_sizes,
    reference_grid_sizes,
    origin_frames: int,
    origin_hw: int,
    whole: int,
    gen_sizes: list[int],
    ref_sizes: list[int],
    device,
) -> torch.Tensor:
    """The (1, 1, generation tokens, generation + reference tokens) boolean mask of the generation pass, over the
    whole sequence, its key columns in the ranks' order [generation piece 0, reference piece 0, piece 1, ...].

    The model's BlockMask (`create_mask`) is built over buffers of the full video's size, with the segment scattered
    frame by frame at a stride of `origin_latent_hw` tokens; buffer slots the segment does not fill are zero keys
    the mask still admits. Only the pipeline's geometry leaves none: the segment's grid is the full video's (the
    generation pass one frame longer, for the reference image's slot), and so is the reference's.
    """
    frames, height, width = grid_sizes[0].tolist()
    ref_frames, ref_height, ref_width = reference_grid_sizes[0].tolist()
    hw, ref_hw = height * width, ref_height * ref_width
    if not (
        hw == ref_hw == origin_hw
        and frames == origin_frames + 1
        and ref_frames == origin_frames
        and whole == frames * hw
    ):
        raise ValueError(
            "WanAnimate2Transformer3DModel under context parallelism serves the generation pass in the pipeline's "
            f"geometry only (the generation grid {frames}x{hw} tokens = the full video's {origin_frames} latent frames "
            f"plus one, the reference grid {ref_frames}x{ref_hw} = the full video's {origin_frames}x{origin_hw}, "
            f"{whole} tokens in all): any other leaves zero-filled slots in the model's packed buffers that its "
            "block mask attends to."
        )
    q_frame = torch.arange(whole, device=device) // hw
    columns, ref_offset = [], 0
    for gen, ref in zip(gen_sizes, ref_sizes):
        columns.append(torch.ones(whole, gen, dtype=torch.bool, device=device))
        ref_frame = torch.arange(ref_offset, ref_offset + ref, device=device) // hw
        columns.append(q_frame[:, None] == ref_frame[None, :] + 1)  # generation frame t sees reference frame t - 1
        ref_offset += ref
    return torch.cat(columns, dim=1)[None, None]


WAN_ANIMATE2 = {
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="wan_animate2_tokens")},
    "blocks.*.self_attn": ContextParallelProcessor(WanAnimate2ContextParallelProcessor),
    # Its processor passes its parallel config for the text and CLIP attention too: replicated keys, run locally.
    "blocks.*.cross_attn": LocalAttention(),
    "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "WanAnimateTransformer3DModel": PlanDeclaration(plan=WAN_ANIMATE),
    "WanAnimate2Transformer3DModel": PlanDeclaration(
        plan=WAN_ANIMATE2,
        no_batch_split="its inputs are lists of per-sample tensors and its KV cache holds the reference pass's batch, "
        "which a cfg group's share of the batch would not match",
    ),
}

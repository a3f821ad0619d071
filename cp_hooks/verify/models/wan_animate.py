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
mask over the whole sequence, its key columns in the ranks' order, through `context_parallel_attention`. The
tokens are split at the first block and gathered at `head`; the text and CLIP cross-attention runs locally
(`LocalAttention`: its processor passes its parallel config for every call). Only the pipeline's geometry is served
(segment grid = the full video's, which leaves no zero-filled buffer slots that the BlockMask would admit); any
other raises on every rank. Uneven shards of the generation pass give the ranks different key counts: the anything
flags. The catalogue checks the reference pass with gradients. The generation pass is `GENERATION_ENTRIES` below,
outputs and gradients: diffusers' processor attends through flex attention, which has no backward on CPU, so that
entry's `prepare` installs `WanAnimate2ReferenceProcessor` as the one-process reference, diffusers' processor line
for line (rope, packing, cache) with the flex call replaced by SDPA under a dense boolean mask, the model's
`create_mask` logic at every packed (query, key): tests/test_wan_animate2.py shows that mask equal to the
BlockMask's (its mask_mod, and its `to_dense()` per block) and the twin's outputs equal to diffusers' (fp32, within
1e-6; measured 3e-7), and runs extract-then-generate under every mode against diffusers' own processor.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F

from cp_hooks.attention import context_parallel_attention
from cp_hooks.attention.masks import SameInputsMemo
from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.forward.lengths import shard_sizes
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, ContextParallelProcessor, LocalAttention

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

_LATENT = 4
# Two blocks, a face adapter after the first only (inject every 2nd block); a motion encoder for 8x8 faces.
_ANIMATE = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=8, in_channels=None,
                latent_channels=_LATENT, out_channels=_LATENT, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                rope_max_seq_len=32, image_dim=32, added_kv_proj_dim=32,
                motion_encoder_channel_sizes={"8": 8, "4": 8}, motion_encoder_size=8, motion_style_dim=16,
                motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
                inject_face_latents_blocks=2, motion_encoder_batch_size=4)


def _animate(config, g, frames=2, height=8, width=12, text=9, image=5):
    # The pipeline's segment: `frames` latent frames plus the reference image's frame in front; the channels are
    # [noisy latents, reference / previous-segment latents with their mask]. The face video has 4 * frames + 1
    # pixel frames, which the face encoder's two stride-2 convolutions bring down to `frames` motion frames.
    size = config["motion_encoder_size"]
    return dict(
        hidden_states=randn(g, 1, 2 * _LATENT + 4, frames + 1, height, width),
        timestep=torch.full((1,), 500.0),
        encoder_hidden_states=randn(g, 1, text, config["text_dim"]),
        encoder_hidden_states_image=randn(g, 1, image, config["image_dim"]),
        pose_hidden_states=randn(g, 1, _LATENT, frames, height, width),
        face_pixel_values=randn(g, 1, 3, 4 * frames + 1, size, size),
        return_dict=False,
    )


# --- Wan Animate 2 (WanAnimate2Transformer3DModel) --------------------------------------------------------------


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

    def __call__(self, attn, hidden_states, rotary_emb, grid_sizes, kv_cache, kv_cache_mode, rope_stride=1,
                 reference_rotary_emb=None, reference_grid_sizes=None, reference_rope_stride=1, attention_mask=None,
                 origin_latent_frames=None, origin_latent_hw=None):
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
                key_ref = key_ref[:, ref_offset:ref_offset + length]
                value_ref = value_ref[:, ref_offset:ref_offset + length]
            key_ref = _rope_rows(key_ref, reference_grid_sizes, reference_rotary_emb, reference_rope_stride,
                                 ref_offset).type_as(value)
            gen_sizes, ref_sizes = self._sizes(whole), self._sizes(ref_whole)
            counts = [g + r for g, r in zip(gen_sizes, ref_sizes)]
            if len(set(counts)) > 1 and not self.runtime.anything:
                raise ValueError(
                    "WanAnimate2Transformer3DModel's generation pass attends over each rank's generation shard plus "
                    f"its part of the cached reference, {counts} keys on the ranks; uneven key counts need "
                    "ContextParallelConfig(ulysses_anything=True) / ring_anything=True."
                )
            mask = _MASKS.get(
                (grid_sizes, reference_grid_sizes, origin_latent_frames, origin_latent_hw, whole, gen_sizes, ref_sizes,
                 query.device),
                lambda: _generation_mask(grid_sizes, reference_grid_sizes, origin_latent_frames, origin_latent_hw,
                                         whole, gen_sizes, ref_sizes, query.device))
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
        table = torch.cat([parts[0][: f * stride: stride].view(f, 1, 1, -1).expand(f, h, w, -1),
                           parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                           parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, -1)
        rows = table[offset:offset + x.size(1)]
        k = rows.shape[0]
        x_i = torch.view_as_complex(x[i, :k].to(torch.float64).reshape(k, n, -1, 2))
        output.append(torch.cat([torch.view_as_real(x_i * rows).flatten(2), x[i, k:]]))
    return torch.stack(output).float()


# The mask is the same in every layer of a forward (built from the grids `forward` hands every layer).
_MASKS = SameInputsMemo()


def _generation_mask(grid_sizes, reference_grid_sizes, origin_frames: int, origin_hw: int, whole: int,
                     gen_sizes: list[int], ref_sizes: list[int], device) -> torch.Tensor:
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
    if not (hw == ref_hw == origin_hw and frames == origin_frames + 1 and ref_frames == origin_frames
            and whole == frames * hw):
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


class WanAnimate2ReferenceProcessor:
    """The one-process reference of the generation pass: diffusers' WanAnimate2AttnProcessor, its flex attention
    computed by SDPA with the BlockMask's pattern as a dense boolean mask (forward and backward on every device).

    Flex attention has no backward on CPU, so the processor diffusers installs cannot be differentiated there. This
    twin is that processor line for line (projections, norms, the extract pass's cache and dense attention, the
    float64 `rope_apply`, the 128-aligned `[generation | reference]` packing at the full video's frame stride, the
    unpacking) except the one call: `_packed_mask` evaluates the model's `create_mask` logic at every (query, key)
    of the packed buffers (equal to the BlockMask's `mask_mod` there, and, taken per 128 x 128 block, to its
    `to_dense()`: tests/test_wan_animate2.py), and SDPA attends with it. Packed query rows past the generation
    tokens see no key; they get a zero output, as in flex, and are dropped by the unpacking either way.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states, rotary_emb, grid_sizes, kv_cache, kv_cache_mode, rope_stride=1,
                 reference_rotary_emb=None, reference_grid_sizes=None, reference_rope_stride=1, attention_mask=None,
                 origin_latent_frames=None, origin_latent_hw=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan_animate_2 import rope_apply

        query, key, value = _self_attention_qkv(attn, hidden_states)

        if kv_cache_mode == "extract":
            kv_cache.store(key, value)
            query = rope_apply(query, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key = rope_apply(key, grid_sizes, rotary_emb, rope_stride).type_as(value)
            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=None, backend=self._attention_backend,
                                                  parallel_config=self._parallel_config)
        elif kv_cache_mode == "cached":
            query = rope_apply(query, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key = rope_apply(key, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key_ref, value_ref = kv_cache.get()
            key_ref = rope_apply(key_ref, reference_grid_sizes, reference_rotary_emb, reference_rope_stride).type_as(
                value)

            frames, height, width = grid_sizes[0].tolist()
            ref_frames, ref_height, ref_width = reference_grid_sizes[0].tolist()
            hw, ref_hw = height * width, ref_height * ref_width
            valid_length, ref_valid_length = frames * hw, ref_frames * ref_hw
            batch_size, _, heads, head_dim = query.shape

            packed_length = math.ceil((origin_latent_frames + 1) * origin_latent_hw / 128) * 128
            packed_ref_length = math.ceil(origin_latent_frames * origin_latent_hw / 128) * 128
            query_packed = query.new_zeros(batch_size, packed_length, heads, head_dim)
            key_packed = key.new_zeros(batch_size, packed_length + packed_ref_length, heads, head_dim)
            value_packed = value.new_zeros(batch_size, packed_length + packed_ref_length, heads, head_dim)

            generation = slice(0, frames * origin_latent_hw)
            for packed, x in ((query_packed, query), (key_packed, key), (value_packed, value)):
                packed[:, generation].view(batch_size, frames, origin_latent_hw, heads, head_dim)[:, :, :hw] = x[
                    :, :valid_length].view(batch_size, frames, hw, heads, head_dim)
            reference = slice(packed_length, packed_length + ref_frames * origin_latent_hw)
            for packed, x in ((key_packed, key_ref), (value_packed, value_ref)):
                packed[:, reference].view(batch_size, ref_frames, origin_latent_hw, heads, head_dim)[:, :, :ref_hw] = (
                    x[:, :ref_valid_length].view(batch_size, ref_frames, ref_hw, heads, head_dim))

            mask = _packed_mask(origin_latent_frames, origin_latent_hw, query.device)
            seen = mask.any(dim=-1, keepdim=True)  # rows with no key: attend anywhere, then zero (flex gives 0)
            hidden_states = F.scaled_dot_product_attention(
                query_packed.transpose(1, 2), key_packed.transpose(1, 2), value_packed.transpose(1, 2),
                attn_mask=mask | ~seen).masked_fill(~seen, 0).transpose(1, 2)

            hidden_states = (hidden_states[:, generation].view(batch_size, frames, origin_latent_hw, heads, head_dim)
                             [:, :, :hw].reshape(batch_size, valid_length, heads, head_dim))
            hidden_states = torch.cat([hidden_states, query[:, valid_length:]], dim=1)
        else:
            raise ValueError(f"`kv_cache_mode` must be either 'extract' or 'cached', got {kv_cache_mode}.")

        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](hidden_states))


def _packed_mask(origin_latent_f: int, hw: int, device) -> torch.Tensor:
    """diffusers' `WanAnimate2Transformer3DModel.create_mask` logic evaluated at every (query, key) of the packed
    buffers: the (packed queries, packed keys) boolean mask its flex BlockMask computes."""
    q_len, k_len = (origin_latent_f + 1) * hw, origin_latent_f * hw
    q_total = math.ceil(q_len / 128) * 128
    k_total = q_total + math.ceil(k_len / 128) * 128
    q_idx = torch.arange(q_total, device=device)[:, None]
    kv_idx = torch.arange(k_total, device=device)[None, :]
    is_first_part = kv_idx < q_total
    rel_kv_idx = kv_idx - q_total
    kv_frame = torch.where(is_first_part, kv_idx // hw, rel_kv_idx // hw + 1)
    kv_is_valid = torch.where(is_first_part, kv_idx < q_len, rel_kv_idx < k_len)
    return (q_idx < q_len) & ((kv_idx < q_len) | ((q_idx // hw == kv_frame) & kv_is_valid))


def _generation_reference(model, generator) -> None:
    """Install WanAnimate2ReferenceProcessor on every self-attention: the generation pass with a CPU backward."""
    for block in model.blocks:
        block.self_attn.set_processor(WanAnimate2ReferenceProcessor())


WAN_ANIMATE2 = {
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="wan_animate2_tokens")},
    "blocks.*.self_attn": ContextParallelProcessor(WanAnimate2ContextParallelProcessor),
    # Its processor passes its parallel config for the text and CLIP attention too: replicated keys, run locally.
    "blocks.*.cross_attn": LocalAttention(),
    "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_A2_LATENT = 4
_ANIMATE2 = dict(patch_size=(1, 2, 2), text_len=8, in_dim=2 * _A2_LATENT + 4, dim=48, ffn_dim=64, freq_dim=32,
                 text_dim=16, out_dim=_A2_LATENT, num_heads=4, num_layers=2, refer_stride=2)
# Pipeline geometry: a segment of 5 frames (2 latent frames) at 32 x 64 pixels: 4 x 8 latents, 2 x 4 patches.
_A2_FRAMES, _A2_HEIGHT, _A2_WIDTH, _A2_SEGMENT = 2, 4, 8, 5


def _animate2_common(config, g, text=5, image=3):
    return dict(timestep=torch.full((1,), 900.0), encoder_hidden_states=[randn(g, text, config["text_dim"])],
                encoder_hidden_states_image=randn(g, 1, image, 1280), return_dict=False)


def animate2_extract(config, g, frames=_A2_FRAMES, height=_A2_HEIGHT, width=_A2_WIDTH):
    """The reference pass (`kv_cache_mode="extract"`): the driving-video segment's latents, its condition [the
    4-channel i2v mask, the latents again], a fresh cache; `offset_grid_sizes` its patch grid."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    latents = randn(g, _A2_LATENT, frames, height, width)
    grid = torch.tensor([[frames, height // 2, width // 2]])
    return dict(_animate2_common(config, g), hidden_states=[latents],
                condition_latents=[torch.cat([randn(g, 4, frames, height, width), latents])],
                kv_cache=WanAnimate2KVCache(config["num_layers"]), kv_cache_mode="extract",
                seq_len=frames * height * width // 4, offset_grid_sizes=grid)


def animate2_generate(config, g, frames=_A2_FRAMES, height=_A2_HEIGHT, width=_A2_WIDTH, segment=_A2_SEGMENT,
                      uncond=False):
    """A denoising step (`kv_cache_mode="cached"`): noise with one more latent frame (the reference image's slot),
    `reference_latents` [mask, reference image + previous segment] as condition, the full video's `origin_len` /
    `origin_area`, and a cache holding the reference keys and values of every layer (as one process writes it:
    the multi-pass run, extract then generate, is tests/test_wan_animate2.py)."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cache = WanAnimate2KVCache(config["num_layers"])
    heads, head_dim = config["num_heads"], config["dim"] // config["num_heads"]
    for layer in cache.layer_caches:
        layer.store(randn(g, 1, frames * height * width // 4, heads, head_dim),
                    randn(g, 1, frames * height * width // 4, heads, head_dim))
    return dict(_animate2_common(config, g), hidden_states=[randn(g, _A2_LATENT, frames + 1, height, width)],
                condition_latents=[randn(g, _A2_LATENT + 4, frames + 1, height, width)],
                kv_cache=cache, kv_cache_mode="cached", seq_len=(frames + 1) * height * width // 4,
                reference_grid_sizes=torch.tensor([[frames, height // 2, width // 2]]), origin_len=segment,
                origin_area=[height * 8, width * 8], is_uncondtion=uncond)


ENTRIES = [
    ModelEntry("WanAnimateTransformer3DModel", WAN_ANIMATE, _ANIMATE, {"animate": _animate},
               note="pose latents; the per-frame face adapter runs whole (its queries gathered, output re-split)"),
    ModelEntry("WanAnimate2Transformer3DModel", WAN_ANIMATE2, _ANIMATE2, {"extract": animate2_extract},
               no_batch_split="its inputs are lists of per-sample tensors and its KV cache holds the reference pass's "
                              "batch, which a cfg group's share of the batch would not match",
               note="self-attention through a processor of the plan's own (ContextParallelProcessor): rotary rows of "
                    "the rank's tokens, the rank's part of the reference keys cached, the generation pass's "
                    "per-frame BlockMask as a whole-sequence mask; the generation pass (GENERATION_ENTRIES: outputs "
                    "and gradients against a dense-mask twin of the flex processor, which has no CPU backward) and "
                    "extract-then-generate in tests/test_wan_animate2.py"),
]

UNSUPPORTED = {}

# The generation pass as a checker case: `torchrun --nproc_per_node 2 -m cp_hooks check WanAnimate2Transformer3DModel
# --entry cp_hooks.models.wan_animate:GENERATION_ENTRIES [--backward]`. Its one-process reference is the dense-mask
# twin of diffusers' processor (`prepare` installs WanAnimate2ReferenceProcessor: diffusers' flex attention has no
# backward on CPU), so outputs and gradients are both checked; it is kept out of the catalogue (which runs every
# case with diffusers' own processors), and tests/test_wan_animate2.py runs it in every mode against diffusers'.
GENERATION_ENTRIES = [dataclasses.replace(
    ENTRIES[-1], cases={"generate": animate2_generate}, prepare=_generation_reference,
    note="the generation pass (kv_cache_mode=\"cached\", a cache written by one process): outputs and gradients "
         "against WanAnimate2ReferenceProcessor, diffusers' processor with its flex BlockMask attention computed "
         "by SDPA with the same mask (flex has no CPU backward; the twin equals diffusers' forward to 4e-7)")]

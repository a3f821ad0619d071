"""Verification of the wan_animate family's plans (`cp_hooks.plans.wan_animate`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F

from cp_hooks.plans.wan_animate import _self_attention_qkv
from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LATENT = 4
# Two blocks, a face adapter after the first only (inject every 2nd block); a motion encoder for 8x8 faces.
_ANIMATE = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=None,
    latent_channels=_LATENT,
    out_channels=_LATENT,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    rope_max_seq_len=32,
    image_dim=32,
    added_kv_proj_dim=32,
    motion_encoder_channel_sizes={"8": 8, "4": 8},
    motion_encoder_size=8,
    motion_style_dim=16,
    motion_dim=4,
    motion_encoder_dim=16,
    face_encoder_hidden_dim=16,
    face_encoder_num_heads=2,
    inject_face_latents_blocks=2,
    motion_encoder_batch_size=4,
)


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
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan_animate_2 import rope_apply

        query, key, value = _self_attention_qkv(attn, hidden_states)

        if kv_cache_mode == "extract":
            kv_cache.store(key, value)
            query = rope_apply(query, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key = rope_apply(key, grid_sizes, rotary_emb, rope_stride).type_as(value)
            hidden_states = dispatch_attention_fn(
                query,
                key,
                value,
                attn_mask=None,
                backend=self._attention_backend,
                parallel_config=self._parallel_config,
            )
        elif kv_cache_mode == "cached":
            query = rope_apply(query, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key = rope_apply(key, grid_sizes, rotary_emb, rope_stride).type_as(value)
            key_ref, value_ref = kv_cache.get()
            key_ref = rope_apply(key_ref, reference_grid_sizes, reference_rotary_emb, reference_rope_stride).type_as(
                value
            )

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
                    :, :valid_length
                ].view(batch_size, frames, hw, heads, head_dim)
            reference = slice(packed_length, packed_length + ref_frames * origin_latent_hw)
            for packed, x in ((key_packed, key_ref), (value_packed, value_ref)):
                packed[:, reference].view(batch_size, ref_frames, origin_latent_hw, heads, head_dim)[:, :, :ref_hw] = x[
                    :, :ref_valid_length
                ].view(batch_size, ref_frames, ref_hw, heads, head_dim)

            mask = _packed_mask(origin_latent_frames, origin_latent_hw, query.device)
            seen = mask.any(dim=-1, keepdim=True)  # rows with no key: attend anywhere, then zero (flex gives 0)
            hidden_states = (
                F.scaled_dot_product_attention(
                    query_packed.transpose(1, 2),
                    key_packed.transpose(1, 2),
                    value_packed.transpose(1, 2),
                    attn_mask=mask | ~seen,
                )
                .masked_fill(~seen, 0)
                .transpose(1, 2)
            )

            hidden_states = (
                hidden_states[:, generation]
                .view(batch_size, frames, origin_latent_hw, heads, head_dim)[:, :, :hw]
                .reshape(batch_size, valid_length, heads, head_dim)
            )
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


_A2_LATENT = 4
_ANIMATE2 = dict(
    patch_size=(1, 2, 2),
    text_len=8,
    in_dim=2 * _A2_LATENT + 4,
    dim=48,
    ffn_dim=64,
    freq_dim=32,
    text_dim=16,
    out_dim=_A2_LATENT,
    num_heads=4,
    num_layers=2,
    refer_stride=2,
)
# Pipeline geometry: a segment of 5 frames (2 latent frames) at 32 x 64 pixels: 4 x 8 latents, 2 x 4 patches.
_A2_FRAMES, _A2_HEIGHT, _A2_WIDTH, _A2_SEGMENT = 2, 4, 8, 5


def _animate2_common(config, g, text=5, image=3):
    return dict(
        timestep=torch.full((1,), 900.0),
        encoder_hidden_states=[randn(g, text, config["text_dim"])],
        encoder_hidden_states_image=randn(g, 1, image, 1280),
        return_dict=False,
    )


def animate2_extract(config, g, frames=_A2_FRAMES, height=_A2_HEIGHT, width=_A2_WIDTH):
    """The reference pass (`kv_cache_mode="extract"`): the driving-video segment's latents, its condition [the
    4-channel i2v mask, the latents again], a fresh cache; `offset_grid_sizes` its patch grid."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    latents = randn(g, _A2_LATENT, frames, height, width)
    grid = torch.tensor([[frames, height // 2, width // 2]])
    return dict(
        _animate2_common(config, g),
        hidden_states=[latents],
        condition_latents=[torch.cat([randn(g, 4, frames, height, width), latents])],
        kv_cache=WanAnimate2KVCache(config["num_layers"]),
        kv_cache_mode="extract",
        seq_len=frames * height * width // 4,
        offset_grid_sizes=grid,
    )


def animate2_generate(
    config, g, frames=_A2_FRAMES, height=_A2_HEIGHT, width=_A2_WIDTH, segment=_A2_SEGMENT, uncond=False
):
    """A denoising step (`kv_cache_mode="cached"`): noise with one more latent frame (the reference image's slot),
    `reference_latents` [mask, reference image + previous segment] as condition, the full video's `origin_len` /
    `origin_area`, and a cache holding the reference keys and values of every layer (as one process writes it:
    the multi-pass run, extract then generate, is tests/test_wan_animate2.py)."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cache = WanAnimate2KVCache(config["num_layers"])
    heads, head_dim = config["num_heads"], config["dim"] // config["num_heads"]
    for layer in cache.layer_caches:
        layer.store(
            randn(g, 1, frames * height * width // 4, heads, head_dim),
            randn(g, 1, frames * height * width // 4, heads, head_dim),
        )
    return dict(
        _animate2_common(config, g),
        hidden_states=[randn(g, _A2_LATENT, frames + 1, height, width)],
        condition_latents=[randn(g, _A2_LATENT + 4, frames + 1, height, width)],
        kv_cache=cache,
        kv_cache_mode="cached",
        seq_len=(frames + 1) * height * width // 4,
        reference_grid_sizes=torch.tensor([[frames, height // 2, width // 2]]),
        origin_len=segment,
        origin_area=[height * 8, width * 8],
        is_uncondtion=uncond,
    )


ENTRIES = [
    ModelEntry(
        "WanAnimateTransformer3DModel",
        config=_ANIMATE,
        cases={"animate": _animate},
        note="pose latents; the per-frame face adapter runs whole (its queries gathered, output re-split)",
    ),
    ModelEntry(
        "WanAnimate2Transformer3DModel",
        config=_ANIMATE2,
        cases={"extract": animate2_extract},
        note="self-attention through a processor of the plan's own (ContextParallelProcessor): rotary rows of "
        "the rank's tokens, the rank's part of the reference keys cached, the generation pass's "
        "per-frame BlockMask as a whole-sequence mask; the generation pass (GENERATION_ENTRIES: outputs "
        "and gradients against a dense-mask twin of the flex processor, which has no CPU backward) and "
        "extract-then-generate in tests/test_wan_animate2.py",
    ),
]

UNSUPPORTED: dict[str, str] = {}

# The generation pass as a checker case: `torchrun --nproc_per_node 2 -m cp_hooks check
# WanAnimate2Transformer3DModel --entry cp_hooks.verify.models.wan_animate:GENERATION_ENTRIES [--backward]`. Its
# one-process reference is the dense-mask twin of diffusers' processor (`prepare` installs
# WanAnimate2ReferenceProcessor: diffusers' flex attention has no backward on CPU), so outputs and gradients are
# both checked; it is kept out of the catalogue (which runs every case with diffusers' own processors), and
# tests/test_wan_animate2.py runs it in every mode against diffusers'.
GENERATION_ENTRIES = [
    dataclasses.replace(
        ENTRIES[-1],
        cases={"generate": animate2_generate},
        prepare=_generation_reference,
        note='the generation pass (kv_cache_mode="cached", a cache written by one process): outputs and gradients '
        "against WanAnimate2ReferenceProcessor, diffusers' processor with its flex BlockMask attention computed "
        "by SDPA with the same mask (flex has no CPU backward; the twin equals diffusers' forward to 4e-7)",
    )
]

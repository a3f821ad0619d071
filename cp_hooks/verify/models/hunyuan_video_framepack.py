"""Verification of the hunyuan_video_framepack family's plans (`cp_hooks.plans.hunyuan_video_framepack`, where each
plan's reasons are): tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_FRAMEPACK = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=2,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    text_embed_dim=32,
    pooled_projection_dim=16,
    rope_axes_dim=(4, 6, 6),
    guidance_embeds=True,
    has_image_proj=True,
    image_proj_dim=24,
    has_clean_x_embedder=True,
)


def _framepack(
    config, g, frames=2, height=8, width=10, text=10, valid=7, image_tokens=5, history=(4, 2, 1), anti_drifting=True
):
    """One call of the FramePack pipeline's denoising loop (history sizes scaled down from [16, 2, 1])."""
    channels = config["in_channels"]
    long, mid, short = history  # 4x, 2x and 1x history frames
    if anti_drifting:  # inverted anti-drifting sampling: [prefix, padding, current, 1x, 2x, 4x]
        padding = frames
        indices = torch.arange(1 + padding + frames + short + mid + long)
        prefix, _, current, i_short, i_mid, i_long = indices.split([1, padding, frames, short, mid, long])
    else:  # vanilla (F1) sampling: [prefix, 4x, 2x, 1x, current]
        indices = torch.arange(1 + long + mid + short + frames)
        prefix, i_long, i_mid, i_short, current = indices.split([1, long, mid, short, frames])
    return dict(
        hidden_states=randn(g, 1, channels, frames, height, width),
        timestep=torch.full((1,), 700.0),
        encoder_hidden_states=randn(g, 1, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(1, text, [valid], dtype=torch.float32),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        image_embeds=randn(g, 1, image_tokens, config["image_proj_dim"]),
        indices_latents=current,
        guidance=torch.full((1,), 10000.0),
        latents_clean=randn(g, 1, channels, 1 + short, height, width),  # [first-frame latents, 1x history]
        indices_latents_clean=torch.cat([prefix, i_short]),
        latents_history_2x=randn(g, 1, channels, mid, height, width),
        indices_latents_history_2x=i_mid,
        latents_history_4x=randn(g, 1, channels, long, height, width),
        indices_latents_history_4x=i_long,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "HunyuanVideoFramepackTransformer3DModel",
        config=_FRAMEPACK,
        cases={"anti_drifting": _framepack, "vanilla": lambda c, g: _framepack(c, g, anti_drifting=False)},
        anything=True,
        note="packed [4x, 2x, clean history, current] video and [image, text] condition split from the first "
        "block, gathered at the last single block (single_transformer_blocks.-1) before forward keeps "
        "the current chunk; refiner local; batch of one (a batch's key mask is built whole)",
    ),
]

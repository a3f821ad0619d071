"""Verification of the ltx2 family's plans (`cp_hooks.plans.ltx2`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_LTX2 = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=4,
    attention_head_dim=8,
    cross_attention_dim=32,
    audio_in_channels=8,
    audio_out_channels=8,
    audio_num_attention_heads=4,
    audio_attention_head_dim=4,
    audio_cross_attention_dim=16,
    num_layers=1,
    caption_channels=16,
)
# LTX-2.3 / 2.5: gated attention, prompt modulation from sigma, "split" rope tables, perturbed attention
# (spatio-temporal guidance), and the keyframe marker embedding.
_LTX23 = dict(
    gated_attn=True,
    audio_gated_attn=True,
    cross_attn_mod=True,
    audio_cross_attn_mod=True,
    rope_type="split",
    perturbed_attn=True,
    ff_bias=False,
    use_keyframes_abs_pos_embedding=True,
)


def _coords(config, batch, frames, height, width, audio_frames, fps=24.0):
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    video = LTX2AudioVideoRotaryPosEmbed(
        dim=8, scale_factors=config["vae_scale_factors"], causal_offset=config["causal_offset"]
    )
    audio = LTX2AudioVideoRotaryPosEmbed(
        dim=8,
        sampling_rate=config["audio_sampling_rate"],
        hop_length=config["audio_hop_length"],
        scale_factors=[config["audio_scale_factor"]],
        causal_offset=config["causal_offset"],
        modality="audio",
    )
    return (
        video.prepare_video_coords(batch, frames, height, width, "cpu", fps=fps),
        audio.prepare_audio_coords(batch, audio_frames, "cpu"),
    )


def _ltx2(config, g, text=9, frames=2, height=4, width=6, audio_frames=7, i2v=False, v23=False):
    batch, tokens = 2, frames * height * width
    video_coords, audio_coords = _coords(config, batch, frames, height, width, audio_frames)
    t = torch.full((batch,), 0.9)
    inputs = dict(
        hidden_states=randn(g, batch, tokens, config["in_channels"]),
        audio_hidden_states=randn(g, batch, audio_frames, config["audio_in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        audio_encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        timestep=t,
        sigma=t,
        encoder_attention_mask=padding_mask(batch, text, [5, text]),
        audio_encoder_attention_mask=padding_mask(batch, text, [5, text]),
        num_frames=frames,
        height=height,
        width=width,
        fps=24.0,
        audio_num_frames=audio_frames,
        video_coords=video_coords,
        audio_coords=audio_coords,
        return_dict=False,
    )
    if i2v:
        # The first latent frame is the clean conditioning image: its tokens have timestep 0.
        video_t = t[:, None].repeat(1, tokens)
        video_t[:, : height * width] = 0
        inputs.update(timestep=video_t, audio_timestep=t)
    if v23:
        inputs.update(
            use_cross_timestep=True,
            spatio_temporal_guidance_blocks=[0],
            perturbation_mask=torch.tensor([1.0, 0.0]),
            video_keyframes_mask=(torch.arange(tokens) < height * width).float()[None, :, None].repeat(batch, 1, 1),
        )
    return inputs


ENTRIES = [
    ModelEntry(
        "LTX2VideoTransformer3DModel",
        config=_LTX2,
        cases={
            "t2av": _ltx2,
            "i2av": lambda c, g: _ltx2(c, g, i2v=True),
            "ltx2.3": lambda c, g: _ltx2(c, g, i2v=True, v23=True),
        },
        case_configs={"ltx2.3": _LTX23},
        anything=True,
        note="video and audio streams both split (cross-modal attention over sharded keys); odd audio length; "
        "I2V per-token timestep; LTX-2.3 split rope, gated / perturbed attention (STG), keyframe marker",
    ),
]

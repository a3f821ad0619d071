"""LTX-2 (LTX2VideoTransformer3DModel): a video and an audio stream, both split; text cross-attention local.

Each block runs video and audio self-attention, video->text and audio->text cross-attention, and the
audio-to-video / video-to-audio cross-attention between the two streams. Both streams are split, so the
cross-modal attention has sharded queries and sharded keys of another length, which cp_hooks' attention
handles like self-attention. The prompt embeddings (and their masks) stay whole and `attn2` / `audio_attn2`
run locally (the processor passes its parallel config for every call).

All four rotary tables (video, audio, and the temporal ones of the cross-modal attention) are computed
from the `(B, axes, S, 2)` coordinates, position by position: the coordinates are split at each rope
module's input, which works for both rope types ("interleaved" (B, S, D) and "split" (B, H, S, D/2)
tables) and whether the pipeline passes the coordinates or `forward` builds them. Image-to-video passes
one video timestep per token (B, S): split with the video tokens, like LTX-2.5's `video_keyframes_mask`.

diffusers' own `_cp_plan` splits only the video and the text and splits the rope tables' outputs by dim 1:
the audio stream stays whole, the cross-modal rope tables are not split (the forward fails on their
length), and "split" rope tables (B, H, S, D/2) would be split along heads.

Refused (not expressible per shard): `video_self_attention_mask` (IC-LoRA), a (B, S, S) query x key mask.
Audio lengths follow the clip duration (126 latent frames for 121 frames at 24 fps): use the anything flags.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_COORDS = {"coords": ContextParallelInput(split_dim=2, expected_dims=4)}
_PER_TOKEN = ContextParallelInput(split_dim=1, expected_dims=2, skip_other_dims=True)

LTX2 = {
    "": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "audio_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "timestep": _PER_TOKEN,
        "audio_timestep": _PER_TOKEN,
        "video_keyframes_mask": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "rope": _COORDS,
    "audio_rope": _COORDS,
    "cross_attn_rope": _COORDS,
    "cross_attn_audio_rope": _COORDS,
    "transformer_blocks.*.attn2": LocalAttention(),
    "transformer_blocks.*.audio_attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    "audio_proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_LTX2 = dict(in_channels=8, out_channels=8, num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
             audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=4, audio_attention_head_dim=4,
             audio_cross_attention_dim=16, num_layers=1, caption_channels=16)
# LTX-2.3 / 2.5: gated attention, prompt modulation from sigma, "split" rope tables, perturbed attention
# (spatio-temporal guidance), and the keyframe marker embedding.
_LTX23 = dict(gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
              rope_type="split", perturbed_attn=True, ff_bias=False, use_keyframes_abs_pos_embedding=True)


def _coords(config, batch, frames, height, width, audio_frames, fps=24.0):
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    video = LTX2AudioVideoRotaryPosEmbed(dim=8, scale_factors=config["vae_scale_factors"],
                                         causal_offset=config["causal_offset"])
    audio = LTX2AudioVideoRotaryPosEmbed(dim=8, sampling_rate=config["audio_sampling_rate"],
                                         hop_length=config["audio_hop_length"],
                                         scale_factors=[config["audio_scale_factor"]],
                                         causal_offset=config["causal_offset"], modality="audio")
    return (video.prepare_video_coords(batch, frames, height, width, "cpu", fps=fps),
            audio.prepare_audio_coords(batch, audio_frames, "cpu"))


def _ltx2(config, g, text=9, frames=2, height=4, width=6, audio_frames=7, i2v=False, v23=False):
    batch, tokens = 2, frames * height * width
    video_coords, audio_coords = _coords(config, batch, frames, height, width, audio_frames)
    t = torch.full((batch,), 0.9)
    inputs = dict(
        hidden_states=randn(g, batch, tokens, config["in_channels"]),
        audio_hidden_states=randn(g, batch, audio_frames, config["audio_in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        audio_encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        timestep=t, sigma=t,
        encoder_attention_mask=padding_mask(batch, text, [5, text]),
        audio_encoder_attention_mask=padding_mask(batch, text, [5, text]),
        num_frames=frames, height=height, width=width, fps=24.0, audio_num_frames=audio_frames,
        video_coords=video_coords, audio_coords=audio_coords, return_dict=False,
    )
    if i2v:
        # The first latent frame is the clean conditioning image: its tokens have timestep 0.
        video_t = t[:, None].repeat(1, tokens)
        video_t[:, : height * width] = 0
        inputs.update(timestep=video_t, audio_timestep=t)
    if v23:
        inputs.update(use_cross_timestep=True, spatio_temporal_guidance_blocks=[0],
                      perturbation_mask=torch.tensor([1.0, 0.0]),
                      video_keyframes_mask=(torch.arange(tokens) < height * width).float()[None, :, None].repeat(batch, 1, 1))
    return inputs


ENTRIES = [
    ModelEntry("LTX2VideoTransformer3DModel", LTX2, _LTX2,
               {"t2av": _ltx2, "i2av": lambda c, g: _ltx2(c, g, i2v=True),
                "ltx2.3": lambda c, g: _ltx2(c, g, i2v=True, v23=True)},
               case_configs={"ltx2.3": _LTX23}, anything=True,
               note="video and audio streams both split (cross-modal attention over sharded keys); odd audio length; "
                    "I2V per-token timestep; LTX-2.3 split rope, gated / perturbed attention (STG), keyframe marker"),
]

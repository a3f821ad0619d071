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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

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


PLANS = {
    "LTX2VideoTransformer3DModel": PlanDeclaration(plan=LTX2),
}

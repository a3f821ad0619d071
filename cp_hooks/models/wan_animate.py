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
"""

import torch

from ..catalogue import ModelEntry
from ..catalogue._inputs import randn
from ..plan import ContextParallelInput, ContextParallelOutput, LocalAttention

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


ENTRIES = [
    ModelEntry("WanAnimateTransformer3DModel", WAN_ANIMATE, _ANIMATE, {"animate": _animate},
               note="pose latents; the per-frame face adapter runs whole (its queries gathered, output re-split)"),
]

UNSUPPORTED = {
    "WanAnimate2Transformer3DModel": (
        "its generation pass (kv_cache_mode='cached') packs the queries and keys frame by frame into buffers sized "
        "for the whole video and attends through a flex BlockMask in which each generation frame sees the reference "
        "tokens of its own frame index only, a query x key mask that varies along the queries and cannot be split; "
        "its self-attention also applies the rotary table inside the processor from the whole grid "
        "(`rope_apply` slices the first frames*height*width tokens of what it receives), and the cached reference "
        "keys come from a separate pass through a KV-cache object"
    ),
}

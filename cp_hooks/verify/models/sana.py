"""Verification of the sana family's plans (`cp_hooks.plans.sana`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import numpy as np
import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_SANA_VIDEO = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=4,
    attention_head_dim=12,
    num_layers=2,
    num_cross_attention_heads=4,
    cross_attention_head_dim=12,
    cross_attention_dim=48,
    caption_channels=16,
    mlp_ratio=2.0,
    patch_size=(1, 2, 2),
    rope_max_seq_len=32,
)


def _sana_video(config, g, text=9, valid=(4, 9), frames=3, height=6, width=10, i2v=False):
    # CFG batch [negative, positive] with the Gemma text mask; 3 x 3 x 5 = 45 video tokens (odd).
    batch = len(valid)
    timestep = torch.full((batch,), 800.0)
    if i2v:
        # SanaImageToVideoPipeline: one timestep per token, 0 on the conditioning first frame.
        p_t, p_h, p_w = config["patch_size"]
        timestep = torch.full((batch, 1, frames // p_t, height // p_h, width // p_w), 800.0)
        timestep[:, :, 0] = 0.0
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        timestep=timestep,
        return_dict=False,
    )


_SANA = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=4,
    attention_head_dim=12,
    num_layers=2,
    num_cross_attention_heads=4,
    cross_attention_head_dim=12,
    cross_attention_dim=48,
    caption_channels=16,
    mlp_ratio=2.0,
    sample_size=8,
    patch_size=1,
)
# Sana-Sprint: guidance embedding and QK norm.
_SPRINT = dict(guidance_embeds=True, qk_norm="rms_norm_across_heads")


def _sana(config, g, text=9, valid=(4, 9), height=5, width=7, guidance=False):
    # SanaPipeline: CFG batch [negative, positive] with the Gemma text mask; 5 x 7 = 35 image tokens (odd).
    # SanaSprintPipeline: one prompt, a guidance scale and an SCM timestep in [0, 1].
    batch = len(valid)
    inputs = dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        timestep=torch.full((batch,), 0.6 if guidance else 800.0),
        return_dict=False,
    )
    if guidance:
        inputs["guidance"] = torch.full((batch,), 4.5 * config["guidance_embeds_scale"])
    return inputs


# GDN blocks only (softmax_every_n=0; the release has a softmax block every 4th, see the module docstring for why
# the catalogue leaves them out); the Plucker embedding after every block's attention.
_SANA_WM = dict(
    in_channels=4,
    num_layers=2,
    hidden_size=32,
    num_attention_heads=2,
    linear_head_dim=16,
    softmax_every_n=0,
    mlp_ratio=2.0,
    caption_channels=16,
    chunk_plucker_channels=48,
    chunk_plucker_post_attn_blocks=-1,
)


def _camera(frames, height, width):
    # SanaWMPipeline._build_camera_kwargs: a slow forward dolly with a small yaw, LTX-2 VAE strides (8, 32, 32).
    from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

    num_frames = (frames - 1) * 8 + 1
    angle = np.linspace(0.0, 0.1, num_frames)
    c2w = np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1))
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle)
    c2w[:, 2, 3] = np.linspace(0.0, 0.4, num_frames)
    intrinsics = np.tile(np.array([150.0, 150.0, width * 16.0, height * 16.0], dtype=np.float32), (num_frames, 1))
    return prepare_camera(c2w, intrinsics, target_size=(height * 32, width * 32), vae_stride=(8, 32, 32))


def _sana_wm(config, g, text=9, valid=(4, 9), frames=3, height=3, width=5):
    # SanaWMPipeline: CFG batch [negative, positive] with the Gemma mask; per-frame timesteps (B, 1, T), 0 on the
    # conditioning first frame; camera raymap (B, T, 20) and chunk Plucker rays (B, 48, T, H, W). 3 x 3 x 5 = 45.
    batch = len(valid)
    timestep = torch.full((batch, 1, frames), 700.0)
    timestep[:, :, 0] = 0.0
    camera = _camera(frames, height, width)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=timestep,
        encoder_hidden_states=randn(g, batch, 1, text, config["caption_channels"]),
        mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        camera_conditions=camera["raymap"][None].repeat(batch, 1, 1),
        chunk_plucker=camera["chunk_plucker"][None].repeat(batch, 1, 1, 1, 1),
        data_info={"img_hw": torch.tensor([[height * 32.0, width * 32.0]])},
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "SanaTransformer2DModel",
        config=_SANA,
        cases={"t2i": _sana, "sprint": lambda c, g: _sana(c, g, valid=(7,), guidance=True)},
        case_configs={"sprint": _SPRINT},
        anything=True,
        note="only the text cross-attention is split (linear self-attention and the conv feed-forward run "
        "whole); CFG batch with a padded text mask; Sana-Sprint guidance and QK norm",
    ),
    ModelEntry(
        "SanaVideoTransformer3DModel",
        config=_SANA_VIDEO,
        cases={"t2v": _sana_video, "i2v": lambda c, g: _sana_video(c, g, i2v=True)},
        anything=True,
        note="only the text cross-attention is split (linear self-attention and the conv feed-forward run "
        "whole); CFG batch with a padded text mask; I2V per-token timestep",
    ),
    ModelEntry(
        "SanaWMTransformer3DModel",
        config=_SANA_WM,
        cases={"camera": _sana_wm},
        anything=True,
        # zero-initialised: the Plucker embedding and the GDN blocks' short key convolutions
        redraw=("plucker_embedder.proj.*", "blocks.*.attn.conv_k*.weight"),
        note="only the text cross-attention is split (GDN / softmax camera attention and the conv "
        "feed-forward run whole, softmax blocks marked LocalAttention()); camera raymap and Plucker "
        "rays; CFG batch with a padded text mask; verified with GDN blocks only (the softmax blocks' "
        "bfloat16 SDPA rounds partial gradients)",
    ),
]

UNSUPPORTED = {
    "SanaWMLTX2RefinerTransformer3DModel": (
        "its pipeline (SanaWMLTX2Refiner) always calls it with a sliding-window KV cache that lives outside the "
        "model: each rank would capture only its shard of the sink and history K/V, and the pipeline trims the "
        "history to history[:, -max_history_frames * tokens_per_frame:], a token count of the whole sequence that "
        "keeps the wrong tokens of a shard (a silently wrong result, not an error); the cache-free call "
        "(kv_cache_mode=None, LTX-2's video stream) could be split like LTX-2, but no pipeline makes it and a plan "
        "cannot refuse a forward argument"
    ),
}

"""Sana family: Sana, Sana-Video and Sana-WM served with only their text cross-attention split; the Sana-WM
refiner refused.

Sana-Video (SanaVideoTransformer3DModel) mixes the video tokens in two places that no split can follow: its
self-attention is ReLU linear attention (global sums over all keys computed with matmuls, neither SDPA nor
`dispatch_attention_fn`, so nothing routes them) and its feed-forward (GLUMBTempConv) is a 3x3 spatial and a
3-tap temporal convolution, run after the block reshapes its tokens to (frames, height, width) with the
*full* grid sizes. A gather before each and a split after cannot be placed either: the reshape and the
residual around the feed-forward are plain code in the block, and an image-to-video timestep is one per
token, so its modulation must be split for the residual and whole for the convolution at the same time.

What runs in parallel is the text cross-attention (`attn2`): the blocks run whole, its query projection's
output is split, the attention over the replicated text runs locally (its processor passes its parallel
config for every call: LocalAttention()) and its output projection is gathered. That is exact for every
config and pipeline call (per-token I2V timesteps included, as the blocks never see a shard), but only the
cross-attention's share of the work is divided. Latent grids need not divide the degrees: anything flags.

Sana (SanaTransformer2DModel) has the same block: ReLU linear self-attention and a GLUMBConv feed-forward
whose 3x3 depthwise convolution runs on the tokens reshaped to the *full* (height, width), so the same
cross-attention-only plan serves it: self-attention and feed-forward run whole on every rank, the T5/Gemma
cross-attention (its processor calls SDPA directly: LocalAttention()) is split by its queries. Sana-Sprint
(guidance embedding, QK norm) and ControlNet residuals (added to the whole blocks' output) change nothing.

Sana-WM (SanaWMTransformer3DModel) is a camera-controlled video model whose blocks mix the video tokens
everywhere but in the text cross-attention: a bidirectional gated-delta-rule (GDN) linear attention (chunked
recurrences over frames) or, every `softmax_every_n`-th block, a softmax attention, each with a UCPE camera
branch (per-ray transforms of the whole grid), and a GLUMBConvTemp feed-forward (spatial and temporal
convolutions on the full grid). So again only the cross-attention (`cross_attn`) is split: its `q_linear`
output is split, the attention over the replicated Gemma text runs locally (its processor passes its parallel
config for every call: LocalAttention()) and its `proj` is gathered. The softmax blocks call
`F.scaled_dot_product_attention` directly on the whole sequence, and cp_hooks routes every SDPA call of an
enabled model as context-parallel: so every block's self-attention (`attn`) is marked LocalAttention() (the
GDN ones call no SDPA; marking them too keeps the plan independent of `softmax_every_n`). Only the
cross-attention's share of the work is divided.

The catalogue's tiny Sana-WM has GDN blocks only. The softmax blocks cast fp32 queries, keys and values to
bfloat16 before SDPA (in every dtype), and under cp_hooks' gradient convention each rank back-propagates its
*partial* gradient through the whole blocks upstream of a split (`cp_hooks.sharding`): rounding each rank's part
to bfloat16 separately leaves the summed gradients ~1e-3 from the single-process ones, beyond the fp32
tolerance, although the forward is exact (`python -m cp_hooks check SanaWMTransformer3DModel --config
'{"softmax_every_n": 2}'` without `--backward` passes with a difference of 0).
"""

import numpy as np
import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_QUERIES = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

# Sana and Sana-Video: only the text cross-attention's queries are split (see the module docstring).
SANA_VIDEO = {
    "transformer_blocks.*.attn2": LocalAttention(),
    "transformer_blocks.*.attn2.to_q": {0: _QUERIES},
    "transformer_blocks.*.attn2.to_out.0": _GATHER,
}
SANA = SANA_VIDEO

# Sana-WM: the same for its `cross_attn`; its self-attention (softmax blocks call SDPA directly) runs whole.
SANA_WM = {
    "blocks.*.attn": LocalAttention(),
    "blocks.*.cross_attn": LocalAttention(),
    "blocks.*.cross_attn.q_linear": {0: _QUERIES},
    "blocks.*.cross_attn.proj": _GATHER,
}


_SANA_VIDEO = dict(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=12, num_layers=2,
                   num_cross_attention_heads=4, cross_attention_head_dim=12, cross_attention_dim=48,
                   caption_channels=16, mlp_ratio=2.0, patch_size=(1, 2, 2), rope_max_seq_len=32)


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


_SANA = dict(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=12, num_layers=2,
             num_cross_attention_heads=4, cross_attention_head_dim=12, cross_attention_dim=48, caption_channels=16,
             mlp_ratio=2.0, sample_size=8, patch_size=1)
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
_SANA_WM = dict(in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, linear_head_dim=16,
                softmax_every_n=0, mlp_ratio=2.0, caption_channels=16, chunk_plucker_channels=48,
                chunk_plucker_post_attn_blocks=-1)


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
    ModelEntry("SanaTransformer2DModel", SANA, _SANA,
               {"t2i": _sana, "sprint": lambda c, g: _sana(c, g, valid=(7,), guidance=True)},
               case_configs={"sprint": _SPRINT}, anything=True,
               note="only the text cross-attention is split (linear self-attention and the conv feed-forward run "
                    "whole); CFG batch with a padded text mask; Sana-Sprint guidance and QK norm"),
    ModelEntry("SanaVideoTransformer3DModel", SANA_VIDEO, _SANA_VIDEO,
               {"t2v": _sana_video, "i2v": lambda c, g: _sana_video(c, g, i2v=True)}, anything=True,
               note="only the text cross-attention is split (linear self-attention and the conv feed-forward run "
                    "whole); CFG batch with a padded text mask; I2V per-token timestep"),
    ModelEntry("SanaWMTransformer3DModel", SANA_WM, _SANA_WM, {"camera": _sana_wm}, anything=True,
               # zero-initialised: the Plucker embedding and the GDN blocks' short key convolutions
               redraw=("plucker_embedder.proj.*", "blocks.*.attn.conv_k*.weight"),
               note="only the text cross-attention is split (GDN / softmax camera attention and the conv "
                    "feed-forward run whole, softmax blocks marked LocalAttention()); camera raymap and Plucker "
                    "rays; CFG batch with a padded text mask; verified with GDN blocks only (the softmax blocks' "
                    "bfloat16 SDPA rounds partial gradients)"),
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

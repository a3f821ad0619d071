"""Verification of the hunyuan_video family's plans (`cp_hooks.plans.hunyuan_video`, where each plan's reasons are):
tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_HUNYUAN = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    text_embed_dim=32,
    pooled_projection_dim=16,
    rope_axes_dim=(4, 6, 6),
    guidance_embeds=True,
)
# I2V (latent_concat): the pipeline concatenates [noisy latents, image latents, frame mask] along channels.
_I2V = dict(in_channels=9, image_condition_type="latent_concat")


def _hunyuan(config, g, text=10, valid=(10, 6), frames=2, height=8, width=12):
    batch = len(valid)  # a batch of prompts (or true CFG's two passes) with different valid lengths
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.full((batch,), 700.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        # The pipeline casts the mask to the transformer's dtype.
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.float32),
        pooled_projections=randn(g, batch, config["pooled_projection_dim"]),
        guidance=torch.full((batch,), 6000.0),  # guidance_scale * 1000
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "HunyuanVideoTransformer3DModel",
        config=_HUNYUAN,
        cases={"t2v": _hunyuan, "i2v": lambda c, g: _hunyuan(c, g, text=13, valid=(13, 9))},
        case_configs={"i2v": _I2V},
        anything=True,
        note="padded text mask (batch of 2 prompts); the token refiner gets the whole text and mask (gathered "
        "inputs); I2V latent_concat, odd text length; token_replace I2V refused (its blocks take the first "
        "frame's token count as a plain int)",
    ),
]

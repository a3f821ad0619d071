"""Verification of the motif_video family's plans (`cp_hooks.plans.motif_video`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_LATENT = 4
# One dual block, two single blocks of which the last is a decoder block; text cross-attention on in both kinds.
_MOTIF = dict(
    in_channels=2 * _LATENT + 1,
    out_channels=_LATENT,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=2,
    num_decoder_layers=1,
    mlp_ratio=2.0,
    patch_size=2,
    patch_size_t=1,
    text_embed_dim=32,
    rope_axes_dim=(4, 6, 6),
    enable_text_cross_attention_dual=True,
    enable_text_cross_attention_single=True,
)
_I2V = dict(image_embed_dim=24)


def _motif(config, g, text=9, valid=(9, 5), image_tokens=0, frames=2, height=8, width=12):
    batch = len(valid)  # the guider's conditional and unconditional passes, batched, with different lengths
    # The pipeline concatenates [noisy latents, first-frame condition latents, its mask] along channels.
    inputs = dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.full((batch,), 900.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid)),  # the pipeline passes it as bool
        return_dict=False,
    )
    if image_tokens:
        inputs["image_embeds"] = randn(g, batch, image_tokens, config["image_embed_dim"])
    return inputs


ENTRIES = [
    ModelEntry(
        "MotifVideoTransformer3DModel",
        config=_MOTIF,
        cases={"t2v": _motif, "i2v": lambda c, g: _motif(c, g, image_tokens=5)},
        case_configs={"i2v": _I2V},
        anything=True,
        note="joint video + text attention with a padded text mask; text cross-attention; decoder single "
        "blocks; I2V SigLIP tokens split apart from the text; odd text and image lengths",
    ),
]

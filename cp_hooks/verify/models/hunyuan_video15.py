"""Verification of the hunyuan_video15 family's plans (`cp_hooks.plans.hunyuan_video15`, where each plan's reasons
are): tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_LATENT = 4
_HUNYUAN15 = dict(
    in_channels=2 * _LATENT + 1,
    out_channels=_LATENT,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=2,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    patch_size=1,
    patch_size_t=1,
    text_embed_dim=32,
    text_embed_2_dim=24,
    image_embed_dim=20,
    rope_axes_dim=(4, 6, 6),
)
_I2V = dict(use_meanflow=True)


def _hunyuan15(
    config, g, i2v=False, text=10, valid=(7, 4), text_2=8, valid_2=(5, 0), image_tokens=5, frames=2, height=6, width=8
):
    batch = len(valid)
    latents = randn(g, batch, _LATENT, frames, height, width)
    cond = torch.zeros(batch, _LATENT, frames, height, width)
    cond_mask = torch.zeros(batch, 1, frames, height, width)
    image_embeds = torch.zeros(batch, image_tokens, config["image_embed_dim"])
    if i2v:
        cond[:, :, 0] = randn(g, 1, _LATENT, height, width)  # the image's latents on the first frame
        cond_mask[:, :, 0] = 1.0
        image_embeds = randn(g, 1, image_tokens, config["image_embed_dim"]).repeat(batch, 1, 1)
    mask_2 = padding_mask(batch, text_2, list(valid_2), dtype=torch.float32)
    inputs = dict(
        hidden_states=torch.cat([latents, cond, cond_mask], dim=1),
        image_embeds=image_embeds,
        timestep=torch.full((batch,), 875.0),
        # The pipeline casts both masks to the transformer's dtype; a prompt without glyph text gets zeros.
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.float32),
        encoder_hidden_states_2=randn(g, batch, text_2, config["text_embed_2_dim"]) * mask_2.amax(1)[:, None, None],
        encoder_attention_mask_2=mask_2,
        return_dict=False,
    )
    if i2v:
        inputs["timestep_r"] = torch.full((batch,), 750.0)  # the next timestep (MeanFlow, step-distilled)
    return inputs


ENTRIES = [
    ModelEntry(
        "HunyuanVideo15Transformer3DModel",
        config=_HUNYUAN15,
        cases={"t2v": _hunyuan15, "i2v": lambda c, g: _hunyuan15(c, g, i2v=True)},
        case_configs={"i2v": _I2V},
        anything=True,
        note="the processor's v[q] & v[k] mask over the local [video, text] tokens (the text mask split in "
        "every block); batch of 2 prompts with padded Qwen text and ByT5 glyph text in one; odd text "
        "length; I2V SigLIP tokens, first-frame condition latents, MeanFlow timestep_r",
    ),
]

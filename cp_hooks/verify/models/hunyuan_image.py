"""Verification of the hunyuan_image family's plans (`cp_hooks.plans.hunyuan_image`, where each plan's reasons are):
tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_LATENT = 4
_HUNYUAN_IMAGE = dict(
    in_channels=_LATENT,
    out_channels=_LATENT,
    num_attention_heads=4,
    attention_head_dim=8,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    patch_size=(1, 1),
    text_embed_dim=16,
    text_embed_2_dim=12,
    rope_axes_dim=(4, 4),
)
# Step-distilled 2.1: guidance embedding and MeanFlow's second timestep.
_DISTILLED = dict(guidance_embeds=True, use_meanflow=True)
# The refiner: 3-D patches over [latents, condition latents], guidance-distilled, no ByT5 text.
_REFINER = dict(
    in_channels=2 * _LATENT, patch_size=(1, 1, 1), rope_axes_dim=(2, 2, 4), text_embed_2_dim=None, guidance_embeds=True
)


def _hunyuan_image(config, g, text=12, valid=(12, 5), text_2=8, valid_2=(6, 0), height=6, width=8, distilled=False):
    # A batch of two prompts (the guider runs one call per CFG branch): one with quoted glyph text (ByT5
    # tokens), one without (zero embeddings and an all-zero mask, as the pipeline makes them).
    batch = len(valid)
    mask_2 = padding_mask(batch, text_2, list(valid_2), dtype=torch.long)
    inputs = dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 900.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        encoder_hidden_states_2=randn(g, batch, text_2, config["text_embed_2_dim"]) * mask_2.amax(1)[:, None, None],
        encoder_attention_mask_2=mask_2,
        return_dict=False,
    )
    if distilled:
        inputs.update(timestep_r=torch.full((batch,), 800.0), guidance=torch.full((batch,), 3500.0))
    return inputs


def _refiner(config, g, text=12, valid=(12, 5), frames=2, height=6, width=8):
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.full((batch,), 900.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        guidance=torch.full((batch,), 3250.0),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "HunyuanImageTransformer2DModel",
        config=_HUNYUAN_IMAGE,
        cases={
            "t2i": _hunyuan_image,
            "distilled": lambda c, g: _hunyuan_image(c, g, distilled=True),
            "refiner": _refiner,
        },
        case_configs={"distilled": _DISTILLED, "refiner": _REFINER},
        note="token refiner gets the whole text and mask (gathered inputs); ByT5 glyph text split; per-sample "
        "text reordering on shards; distilled (guidance, MeanFlow) and the 5-D refiner",
    ),
]

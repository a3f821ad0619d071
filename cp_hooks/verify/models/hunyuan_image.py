"""HunyuanImage 2.1 (HunyuanImageTransformer2DModel): joint image + text attention, both streams split.

The image tokens are split at the patch embedding and the rotary table (cos, sin; one row per image token,
computed by `rope` for the whole grid) with them. The text is split where it enters:

- The MLLM text goes through the token refiner (`context_embedder`), which needs all of it: it pools over
  its padding mask and runs self-attention with a query x key mask (plain SDPA through diffusers'
  dispatch, marked local). So the refiner gets the whole text, its output is split, and its padding mask,
  split at the model's input, is gathered back for it (HunyuanVideo's arrangement).
- The ByT5 glyph text (a per-token projection) and its mask are split at the model's input.

`forward` then reorders each sample's text as [valid ByT5, valid MLLM, invalid ByT5, invalid MLLM] with
the matching mask, and pads the mask on the left with True for `hidden_states.shape[1]` image tokens. On a
rank both happen on its shards: the local mask is exactly the mask of the local [image, text] keys, and
every text token lands on exactly one rank, in another order than alone. That is harmless: the text has
no rotary positions, attention sums over keys in any order, and the text stream is dropped after the
last block (only the image tokens are gathered, at `proj_out`). Every text shard of a batch has the same
length, so the per-sample reordering still stacks.

The refiner pipeline passes 5-D latents ([noisy, condition] along channels, one extra leading frame) to a
config with 3-D patches and rotary axes; the plan is the same.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput
from cp_hooks.verify.models.hunyuan_video import HUNYUAN_VIDEO

_MASK = ContextParallelInput(split_dim=1, expected_dims=2)

# HunyuanVideo's plan (the token refiner, the image tokens, the rotary table, proj_out), with the ByT5 text and
# both masks split at the model's input.
HUNYUAN_IMAGE = {
    **HUNYUAN_VIDEO,
    "": {
        "encoder_attention_mask": _MASK,
        "encoder_hidden_states_2": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_attention_mask_2": _MASK,
    },
}


_LATENT = 4
_HUNYUAN_IMAGE = dict(in_channels=_LATENT, out_channels=_LATENT, num_attention_heads=4, attention_head_dim=8,
                      num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=(1, 1),
                      text_embed_dim=16, text_embed_2_dim=12, rope_axes_dim=(4, 4))
# Step-distilled 2.1: guidance embedding and MeanFlow's second timestep.
_DISTILLED = dict(guidance_embeds=True, use_meanflow=True)
# The refiner: 3-D patches over [latents, condition latents], guidance-distilled, no ByT5 text.
_REFINER = dict(in_channels=2 * _LATENT, patch_size=(1, 1, 1), rope_axes_dim=(2, 2, 4), text_embed_2_dim=None,
                guidance_embeds=True)


def _hunyuan_image(config, g, text=12, valid=(12, 5), text_2=8, valid_2=(6, 0), height=6, width=8,
                   distilled=False):
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
    ModelEntry("HunyuanImageTransformer2DModel", HUNYUAN_IMAGE, _HUNYUAN_IMAGE,
               {"t2i": _hunyuan_image, "distilled": lambda c, g: _hunyuan_image(c, g, distilled=True),
                "refiner": _refiner},
               case_configs={"distilled": _DISTILLED, "refiner": _REFINER},
               note="token refiner gets the whole text and mask (gathered inputs); ByT5 glyph text split; per-sample "
                    "text reordering on shards; distilled (guidance, MeanFlow) and the 5-D refiner"),
]

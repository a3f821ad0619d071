"""Ovis-Image (OvisImageTransformer2DModel): Flux-style joint text + image attention, both streams split.

The same layout as Flux.1 and LongCat-Image: the dual-stream processor concatenates [text, image] queries,
keys and values, the single-stream blocks concatenate the streams before their attention, and `forward`
computes the rotary tables from `cat(txt_ids, img_ids)`, so the (S, 3) ids are split exactly like their
tokens (the deprecated (1, S, 3) ids are not accepted by the plan: the pipeline passes (S, 3)). The text is
padded to `max_sequence_length` (any value up to 256) with the padding's embeddings zeroed and no mask, and
images on the 16-pixel grid give odd token counts: anything flags, odd text and image lengths.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, randn
from cp_hooks.verify.models.flux import FLUX

# Flux.1's plan: text, image and their (S, 3) ids split at the model's input, gathered at proj_out.
OVIS_IMAGE = FLUX

_OVIS = dict(patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=4, joint_attention_dim=32, axes_dims_rope=(4, 6, 6))


def _ovis(config, g, text=9, valid=6, height=3, width=5):
    text_embeds = randn(g, 1, text, config["joint_attention_dim"])
    text_embeds[:, valid:] = 0  # the pipeline zeroes the padding's embeddings instead of masking them
    txt_ids = torch.zeros(text, 3)
    txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(text)
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=text_embeds, timestep=torch.full((1,), 0.7),
        img_ids=grid_ids(height, width, lead=1), txt_ids=txt_ids, return_dict=False,
    )


ENTRIES = [
    ModelEntry("OvisImageTransformer2DModel", OVIS_IMAGE, _OVIS, {"t2i": _ovis}, anything=True,
               note="zero-padded text without a mask; odd text and image lengths"),
]

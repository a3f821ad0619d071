"""LongCat-Image (LongCatImageTransformer2DModel): Flux-style joint text + image attention, both streams split.

The dual-stream blocks concatenate [text, image] queries, keys and values inside the processor and the
single-stream blocks concatenate the two streams before their attention, both in the local order
[text shard, image shard]. `forward` computes the rotary tables from `cat(txt_ids, img_ids)`, so the
(S, 3) ids are split exactly like their tokens and the tables come out in that same local order. No mask
reaches the transformer. The edit pipeline appends the reference image's tokens (and ids, modality 2) to
the noisy image's, so they are split with the image stream, and takes the first image tokens of the
gathered output. The text is the prompt (at most 512 tokens) plus the chat template's prefix and suffix:
its length is odd in general, so the model is verified with the anything flags and an odd text.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.verify.models.flux import FLUX

# Flux.1's plan: text, image and their (S, 3) ids split at the model's input, gathered at proj_out.
LONGCAT_IMAGE = FLUX

_LONGCAT = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))


def pos_ids(modality: int, start: int, text: int = 0, height: int = 0, width: int = 0) -> torch.Tensor:
    """The pipeline's (S, 3) ids: [modality, row, column], text on the diagonal, images offset by `start`."""
    if text:
        ids = torch.zeros(text, 3)
        ids[:, 1] = ids[:, 2] = torch.arange(text) + start
    else:
        ids = torch.zeros(height, width, 3)
        ids[..., 1] = torch.arange(height)[:, None] + start
        ids[..., 2] = torch.arange(width)[None, :] + start
        ids = ids.reshape(height * width, 3)
    ids[:, 0] = modality
    return ids


def _longcat(config, g, text=9, height=3, width=4, edit=False):
    img_ids = pos_ids(1, text, height=height, width=width)
    tokens = height * width
    if edit:  # the reference image's tokens follow the noisy image's; the pipeline builds its ids in float64
        img_ids = torch.cat([img_ids, pos_ids(2, text, height=height, width=width).double()])
        tokens *= 2
    return dict(
        hidden_states=randn(g, 1, tokens, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        timestep=torch.full((1,), 0.5), img_ids=img_ids, txt_ids=pos_ids(0, 0, text=text), return_dict=False,
    )


ENTRIES = [
    ModelEntry("LongCatImageTransformer2DModel", LONGCAT_IMAGE, _LONGCAT,
               {"t2i": _longcat, "edit": lambda c, g: _longcat(c, g, edit=True)}, anything=True,
               note="odd text length (prompt + chat template); edit: reference-image tokens appended to the image"),
]

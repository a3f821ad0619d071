"""Verification of the longcat_image family's plans (`cp_hooks.plans.longcat_image`, where each plan's reasons are):
tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LONGCAT = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 6, 6),
)


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
        timestep=torch.full((1,), 0.5),
        img_ids=img_ids,
        txt_ids=pos_ids(0, 0, text=text),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "LongCatImageTransformer2DModel",
        config=_LONGCAT,
        cases={"t2i": _longcat, "edit": lambda c, g: _longcat(c, g, edit=True)},
        anything=True,
        note="odd text length (prompt + chat template); edit: reference-image tokens appended to the image",
    ),
]

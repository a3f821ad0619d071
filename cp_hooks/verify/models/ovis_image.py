"""Verification of the ovis_image family's plans (`cp_hooks.plans.ovis_image`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, randn

_OVIS = dict(
    patch_size=1,
    in_channels=16,
    out_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
)


def _ovis(config, g, text=9, valid=6, height=3, width=5):
    text_embeds = randn(g, 1, text, config["joint_attention_dim"])
    text_embeds[:, valid:] = 0  # the pipeline zeroes the padding's embeddings instead of masking them
    txt_ids = torch.zeros(text, 3)
    txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(text)
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=text_embeds,
        timestep=torch.full((1,), 0.7),
        img_ids=grid_ids(height, width, lead=1),
        txt_ids=txt_ids,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "OvisImageTransformer2DModel",
        config=_OVIS,
        cases={"t2i": _ovis},
        anything=True,
        note="zero-padded text without a mask; odd text and image lengths",
    ),
]

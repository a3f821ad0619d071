"""Verification of the pixart family's plans (`cp_hooks.plans.pixart`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_PIXART = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    cross_attention_dim=32,
    caption_channels=16,
    sample_size=8,
    patch_size=2,
    norm_num_groups=1,
    use_additional_conditions=False,
)


def _pixart(config, g, text=9, height=8, width=12):
    return dict(
        hidden_states=randn(g, 2, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 2, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(2, text, [text, 5], dtype=torch.long),
        timestep=torch.tensor([999, 999]),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "PixArtTransformer2DModel",
        config=_PIXART,
        cases={"t2i": _pixart},
        note="batch of 2 with a padded text mask; cross-attention marked LocalAttention()",
    ),
]

"""Mochi: text-to-video with a CFG batch (an empty negative prompt has an all-False mask) and padded T5 text."""

import torch

from . import ModelEntry
from ._inputs import padding_mask, randn

_MOCHI = dict(patch_size=2, num_attention_heads=4, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
              in_channels=4, text_embed_dim=32, time_embed_dim=16, max_sequence_length=10)


def _mochi(config, g, text=10, valid=(0, 7), frames=2, height=8, width=12):
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        timestep=torch.full((batch,), 500.0),
        encoder_attention_mask=padding_mask(batch, text, list(valid)),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("MochiTransformer3DModel", _MOCHI, {"t2v": _mochi}, anything=True,
               note="each rank keeps its own valid text tokens (lengths differ per rank: anything flags); "
                    "CFG batch with an empty negative prompt"),
]

"""Verification of the mochi family's plans (`cp_hooks.plans.mochi`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_MOCHI = dict(
    patch_size=2,
    num_attention_heads=4,
    attention_head_dim=8,
    num_layers=2,
    pooled_projection_dim=16,
    in_channels=4,
    text_embed_dim=32,
    time_embed_dim=16,
    max_sequence_length=10,
)


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
    ModelEntry(
        "MochiTransformer3DModel",
        config=_MOCHI,
        cases={"t2v": _mochi},
        anything=True,
        note="each rank keeps its own valid text tokens (lengths differ per rank: anything flags); "
        "CFG batch with an empty negative prompt",
    ),
]

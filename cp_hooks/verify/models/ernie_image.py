"""Verification of the ernie_image family's plans (`cp_hooks.plans.ernie_image`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

# The rotary axes (2, 2, 4) sum to head_dim = 8.
_ERNIE_IMAGE = dict(
    hidden_size=32,
    num_attention_heads=4,
    num_layers=2,
    ffn_hidden_size=64,
    in_channels=4,
    out_channels=4,
    patch_size=1,
    text_in_dim=16,
    rope_axes_dim=(2, 2, 4),
)


def _ernie_image(config, g, lengths=(7, 3), height=6, width=8):
    # The pipeline pads the prompts of the CFG batch [negative, positive] to the longest and passes lengths.
    batch, longest = len(lengths), max(lengths)
    text = randn(g, batch, longest, config["text_in_dim"])
    for i, length in enumerate(lengths):
        text[i, length:] = 0
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 700.0),
        text_bth=text,
        text_lens=torch.tensor(lengths),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "ErnieImageTransformer2DModel",
        config=_ERNIE_IMAGE,
        cases={"t2i": _ernie_image},
        anything=True,
        redraw=("adaLN_modulation.*", "final_linear.*"),
        note="sequence-first layers; per-token modulation, rotary table and text mask split in every layer; "
        "zero-initialised modulation and output redrawn",
    ),
]

"""Mochi (MochiTransformer3DModel): joint video + text attention, both streams split.

`time_embed` pools the whole text over its padding mask (attention pooling) and projects it; the
projected text is split at the first block, with the video tokens. Mochi's processor drops the padded text
tokens of each sample (`nonzero` on the mask) before calling SDPA, so every block's copy of the mask is
split with its text: each rank keeps its own valid tokens, and the per-rank lengths differ with the
prompt. That needs the anything flags, whatever the text length; the lengths are exchanged in the first
forward of each prompt mask (its values are part of the signature, `cp_hooks.length_memo`). The
rotary table (S, heads, D/2) is computed for the full video grid and split with the video tokens.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_ROPE = ContextParallelInput(split_dim=0, expected_dims=3, split_output=True)

MOCHI = {
    "rope": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "transformer_blocks.*": {"encoder_attention_mask": ContextParallelInput(split_dim=1, expected_dims=2)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


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
    ModelEntry("MochiTransformer3DModel", MOCHI, _MOCHI, {"t2v": _mochi}, anything=True,
               note="each rank keeps its own valid text tokens (lengths differ per rank: anything flags); "
                    "CFG batch with an empty negative prompt"),
]

"""Verification of the lumina family's plans (`cp_hooks.plans.lumina`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

# 4 query heads sharing 2 key/value heads (the released model: 24 and 8); rotary axes sum to head_dim.
_LUMINA2 = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    hidden_size=32,
    num_layers=1,
    num_refiner_layers=1,
    num_attention_heads=4,
    num_kv_heads=2,
    multiple_of=16,
    axes_dim_rope=(2, 2, 4),
    axes_lens=(32, 16, 16),
    cap_feat_dim=16,
)


def _lumina2(config, g, text=12, valid=(9,), height=8, width=12):
    # The pipeline pads the Gemma text to 256 tokens with a mask and calls the model once per CFG branch,
    # with a batch of prompts; the timestep runs from 0 (noise) to 1.
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 0.3),
        encoder_hidden_states=randn(g, batch, text, config["cap_feat_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "Lumina2Transformer2DModel",
        config=_LUMINA2,
        cases={"t2i": _lumina2, "prompts": lambda c, g: _lumina2(c, g, valid=(9, 4))},
        anything=True,
        note="refiners run whole; packed [text, image] sequence split; batch of prompts with different "
        "text lengths (padding mask); grouped key/value heads",
    ),
]

UNSUPPORTED = {
    "LuminaNextDiT2DModel": (
        "LuminaPipeline's default proportional attention (proportional_attn=True passes base_sequence_length) "
        "scales the self-attention softmax by sqrt(log(sequence_length, base_sequence_length)), with "
        "sequence_length read from the queries the processor receives: on each rank the local shard's length, "
        "so every rank would use a wrong scale, silently (a plan splitting the patch embedding's tokens, mask and "
        "rotary table, with attn2 local, is exact with proportional_attn=False) (needs: a plan spec that rewrites "
        "or refuses a forward keyword argument, e.g. base_sequence_length in cross_attention_kwargs)"
    ),
}

"""Krea 2 (Krea2Transformer2DModel): single-stream [text, image] attention; the joint sequence split from the
first block to the last.

`forward` builds the joint sequence itself (`cat([text, image])`, no module), takes (T + I, 3) rotary ids for it
in the same order (text rows at the origin) and a (B, 1, 1, T + I) key-padding mask whose text part has padding
in the middle of the template, and after the last block keeps `joint[:, text_seq_len:]`, an absolute offset into
the whole joint sequence. So the joint sequence is split at the input of the first block
(`transformer_blocks.0`) and gathered at the output of the last (`transformer_blocks.-1`), before that slice;
the rotary tables (computed once by `rotary_emb` from the whole ids, in the joint order) are split at its
output, and every block splits its copy of the joint mask along its keys, so the mask covers exactly the local
keys. Grouped-query heads are repeated by the processor before cp_hooks' attention exchanges keys and values.
The text fusion (self-attention over the tapped-layer axis of every token, then over the whole text with its
mask) runs whole and locally on every rank, before the split. The text is padded to `max_sequence_length`
(512 by default, any value allowed): anything flags, odd text and image lengths.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

KREA2 = {
    "text_fusion": LocalAttention(),
    "rotary_emb": {0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
                   1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)},
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*": {"attention_mask": ContextParallelInput(split_dim=3, expected_dims=4)},
    "transformer_blocks.-1": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_KREA2 = dict(in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=64, timestep_embed_dim=32, text_hidden_dim=32, num_text_layers=3,
              text_num_attention_heads=4, text_num_key_value_heads=2, text_intermediate_size=64,
              num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6))


def _krea2(config, g, text=9, prompts=(5, 3), suffix=2, height=3, width=5):
    batch = len(prompts)
    # [prompt | PAD | suffix]: the pipeline pads in the middle of the template
    mask = torch.cat([padding_mask(batch, text - suffix, list(prompts)), torch.ones(batch, suffix, dtype=torch.bool)], 1)
    return dict(
        hidden_states=randn(g, batch, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["num_text_layers"], config["text_hidden_dim"]),
        timestep=torch.full((batch,), 0.7),
        position_ids=torch.cat([torch.zeros(text, 3), grid_ids(height, width, lead=1)]),
        encoder_attention_mask=mask, return_dict=False,
    )


ENTRIES = [
    ModelEntry("Krea2Transformer2DModel", KREA2, _KREA2, {"t2i": _krea2}, anything=True,
               note="joint [text, image] sequence split at the first block and gathered at the last "
                    "(transformer_blocks.-1); batch of 2 prompts padded in the middle of the template; "
                    "grouped-query heads"),
]

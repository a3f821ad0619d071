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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

KREA2 = {
    "text_fusion": LocalAttention(),
    "rotary_emb": {
        0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
    },
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*": {"attention_mask": ContextParallelInput(split_dim=3, expected_dims=4)},
    "transformer_blocks.-1": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "Krea2Transformer2DModel": PlanDeclaration(plan=KREA2),
}

"""Ideogram 4 (Ideogram4Transformer2DModel): one packed [left-padded text, image] sequence per sample.

Ideogram4Pipeline calls the model twice per step: the conditional pass over [padding, text, image] and the
unconditional pass over the image alone (a second instance, `unconditional_transformer`, of the same class).
Every input has one row per token; `forward` masks the text and image features by their role (`indicator`),
computes the (cos, sin) MRoPE table from `position_ids` in the `rotary_emb` module, and builds the attention
mask from `segment_ids` as `seg[q] == seg[k]` (B, 1, S, S): the padding (segment -1) attends only to itself,
the prompt and image only to themselves.

That mask varies along queries, so it is left whole: `segment_ids` is not split, `forward` builds the mask over
the whole sequence on every rank, and cp_hooks' attention takes the rows of each rank's queries and each key
block's columns (docs/architecture.md, "Masks"). The sequence is split once, at the first layer's input, which
keeps the whole order the mask is written in; the rotary table is split at its module's output, and the
output is gathered at `final_layer`. The conditioning (`adaln_input`, one row per sample) stays whole.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TABLE = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)  # (B, S, head_dim)

IDEOGRAM4 = {
    "rotary_emb": {0: _TABLE, 1: _TABLE},
    "layers.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "Ideogram4Transformer2DModel": PlanDeclaration(plan=IDEOGRAM4),
}

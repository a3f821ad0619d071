"""Mochi (MochiTransformer3DModel): joint video + text attention, both streams split.

`time_embed` pools the whole text over its padding mask (attention pooling) and projects it; the
projected text is split at the first block, with the video tokens. Mochi's processor drops the padded text
tokens of each sample (`nonzero` on the mask) before calling SDPA, so every block's copy of the mask is
split with its text: each rank keeps its own valid tokens, and the per-rank lengths differ with the
prompt. That needs the anything flags, whatever the text length; the lengths are exchanged in the first
forward of each prompt mask (its values are part of the signature, `cp_hooks.forward.length_memo`). The
rotary table (S, heads, D/2) is computed for the full video grid and split with the video tokens.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

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


PLANS = {
    "MochiTransformer3DModel": PlanDeclaration(plan=MOCHI),
}

"""Helios (HeliosTransformer3DModel): attention and feed-forward split inside every block, as diffusers does.

The sequence is [long, mid, short history tokens, current chunk], and each block finds the current chunk by
`original_context_length`, a plain int from `forward` (only the current chunk does the text
cross-attention, "guidance_cross_attn"). That int describes the whole sequence, so the blocks themselves
run whole; what is split is the work inside them: the self-attention (queries, keys and the rotary table),
the text cross-attention (its queries; the text is replicated and the processor already runs it locally)
and the feed-forward, each gathered right after its output projection.

This is diffusers' `_cp_plan` with wildcards: diffusers names the gathers `blocks.0..39` (the 14B model's
40 layers), which does not fit other depths, and cp_hooks refuses missing names. Refused (not covered):
`is_amplify_history=True`, whose processor finds the history length from its (split) input.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration, UnsupportedConfig

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

HELIOS = {
    "blocks.*.attn1": {"hidden_states": _TOKENS, "rotary_emb": _TOKENS},
    "blocks.*.attn2": {"hidden_states": _TOKENS},
    "blocks.*.ffn": {"hidden_states": _TOKENS},
    "blocks.*.attn1.to_out.1": _GATHER,
    "blocks.*.attn2.to_out.1": _GATHER,
    "blocks.*.ffn.net.2": _GATHER,
}


_REFUSED = (
    UnsupportedConfig(
        "blocks.*.attn1",
        "is_amplify_history",
        (True,),
        "its self-attention scales the keys of the history tokens, whose count it takes as the length "
        "of the (split) sequence it receives minus the current chunk's whole length.",
    ),
)


PLANS = {
    "HeliosTransformer3DModel": PlanDeclaration(plan=HELIOS, unsupported=_REFUSED),
}

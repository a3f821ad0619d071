"""CogView 3 Plus and CogView 4: joint text + image attention (text first), both streams split.

CogView3Plus: `patch_embed` returns [text, image] in one tensor (sincos positions added to the image) and
`forward` slices it apart by the full text length, so both streams are split at the first block. Its
CogVideoX processor concatenates [local text, local image] and splits the result by the local text length,
and the block's feed-forward does the same: consistent on every rank. No rotary table, no mask.

CogView4: `patch_embed` returns the image and text streams separately, so both of its outputs are split;
the 2-D rotary table (cos, sin), one row per image token, is computed by `rope` for the whole grid and
split like the image. The processor concatenates [local text, local image] and rotates the rows after the
local text length with the local table: aligned. The pipelines pad the GLM text (on the left) to a multiple
of 16 tokens and pass no mask; the optional `attention_mask` argument builds a (B, 1, S, S) query x key
float mask, which cp_hooks refuses with an error. CogView4-Control concatenates the control latents along
channels (twice the input channels), which changes nothing for the plan.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

COGVIEW3PLUS = {
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

COGVIEW4 = {
    "patch_embed": {
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
        1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "rope": {0: _ROPE, 1: _ROPE},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "CogView3PlusTransformer2DModel": PlanDeclaration(plan=COGVIEW3PLUS),
    "CogView4Transformer2DModel": PlanDeclaration(plan=COGVIEW4),
}

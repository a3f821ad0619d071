"""GLM-Image (GlmImageTransformer2DModel): joint glyph text + image attention (text first), both split.

`forward` adds the prior-token embeddings (one per image token, from the autoregressive stage) to the
projected image before the first block, so the image and the glyph text are split at the first block,
after that sum; the 2-D rotary table (cos, sin; one row per image token, computed by `rope` for the whole
grid) is split like the image. The processor concatenates [local text, local image] and rotates the rows
after the local text length with the local table: aligned. The glyph text length follows the prompt
(anything flags). The optional `attention_mask` builds a (B, 1, S, S) query x key float mask, which
cp_hooks refuses with an error; the pipeline does not pass it.

Image editing with `kv_caches`: the condition images' keys and values are written in a first pass and
prepended to the keys in later passes. Under the plan each rank writes and reads its own shard, so every
rank's keys are [its cached shard, its current shard], together all keys in another order (no mask, so
the order is harmless). The catalogue cannot express that two-pass sequence as one input case, so it is
not among the cases below; a hand-run script (write a 6 x 8 condition image, then read and skip passes)
matched one process to 1.6e-7 under Ulysses 2 and ring 2.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

GLM_IMAGE = {
    "rope": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "GlmImageTransformer2DModel": PlanDeclaration(plan=GLM_IMAGE),
}

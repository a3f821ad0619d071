"""EasyAnimate (EasyAnimateTransformer3DModel): joint text + video attention (text first), both streams split.

Every block's attention runs over [text, video] (MMDiT blocks project the two streams separately, the later
plain blocks together); the processor concatenates them, applies the rotary table to the tokens after the
(local) text length and splits the result back by that length. So the text and the video are split at the
first block (later blocks get their shards from the block before), and the 3-D rotary table, computed by
`rope_embedding` for the whole video grid, is split with the video tokens. Nothing else mixes tokens: the
patch embedding is a per-frame strided convolution and the inpaint / control latents are concatenated along
channels before it. The text is padded to 256 tokens (no mask reaches the model), so lengths divide.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

EASYANIMATE = {
    "rope_embedding": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "EasyAnimateTransformer3DModel": PlanDeclaration(plan=EASYANIMATE),
}

"""ConsisID (ConsisIDTransformer3DModel): CogVideoX-style joint [text, video] attention; video split, text
split only inside the attention.

The video tokens are split at the first block and the pipeline's rotary table (video tokens only) at the
model's input. The text cannot stay split between blocks as in CogVideoX: after the last block `forward`
concatenates [text, video], normalises and drops the first `text_seq_length` tokens, a plain int counted on
the whole text. So every block keeps the whole text, and only its attention sees a shard: `norm1`'s text
output is split and the attention's text output (output 1) gathered back. The attention processor finds the
text length from what it receives, so it works on [local text, local video]; the block's text feed-forward
and norms run on the whole text on every rank (226 tokens, beside thousands of video tokens).

The identity modules (`local_facial_extractor`, `perceiver_cross_attention`) compute their attention with
matmuls, not SDPA: the face tokens are replicated and each video token's query attends to them locally.
ConsisID checkpoints are CogVideoX 5B I2V (image latents concatenated along channels): 226 text tokens, odd
per rank at 4 ranks, hence the anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

CONSISID = {
    "": {"image_rotary_emb": [_ROPE, _ROPE]},
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    # norm1 returns (video, text, gate, text gate): the attention gets this rank's piece of the text ...
    "transformer_blocks.*.norm1": {1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    # ... and its (video, text) outputs: the text comes back whole for the residual and the feed-forward.
    "transformer_blocks.*.attn1": [None, ContextParallelOutput(gather_dim=1, expected_dims=3)],
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "ConsisIDTransformer3DModel": PlanDeclaration(plan=CONSISID),
}

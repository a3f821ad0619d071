"""HunyuanVideo (HunyuanVideoTransformer3DModel): joint video + text attention, both streams split.

The token refiner (`context_embedder`) needs the whole text and its padding mask: it pools the text over
the mask and runs self-attention with a query x key mask. So the text enters it whole and its output is
split; the padding mask is split at the model's input (for the blocks) and gathered back for the refiner.
`forward` then builds the blocks' [video, text] key-padding mask from the *local* lengths and the local
`encoder_attention_mask.sum()`; the pipeline's text mask is right-padded (valid tokens first), so every
contiguous shard of it is right-padded too, and that local construction is exactly this rank's piece of
the full mask. The refiner's attention (plain SDPA over the whole text) runs locally. The 3-D rotary table
is computed for the full video grid and split with the video tokens.

Refused (not covered): `image_condition_type="token_replace"` (HunyuanVideo-I2V v2), whose blocks modulate
the first `first_frame_num_tokens` tokens of the sequence they receive: a plain int from `forward` that a plan
cannot shift to each rank's shard.
"""

from __future__ import annotations

from cp_hooks.plans.specs import (
    ContextParallelInput,
    ContextParallelOutput,
    LocalAttention,
    PlanDeclaration,
    UnsupportedConfig,
)

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

HUNYUAN_VIDEO = {
    "": {"encoder_attention_mask": ContextParallelInput(split_dim=1, expected_dims=2)},
    "context_embedder": {
        "attention_mask": ContextParallelOutput(gather_dim=1, expected_dims=2),
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "context_embedder.token_refiner": LocalAttention(),
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "rope": {0: _ROPE, 1: _ROPE},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_REFUSED = (
    UnsupportedConfig(
        "",
        "config.image_condition_type",
        ("token_replace",),
        "its blocks modulate the first frame's tokens, found by a plain int count from the start of "
        "the sequence, which each rank's shard does not share.",
    ),
)


PLANS = {
    "HunyuanVideoTransformer3DModel": PlanDeclaration(plan=HUNYUAN_VIDEO, unsupported=_REFUSED),
}

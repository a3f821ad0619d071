"""HunyuanVideo 1.5 (HunyuanVideo15Transformer3DModel): joint video + text attention, both streams split.

`forward` runs everything that needs the whole text before the first block: the token refiner
(`context_embedder`, self-attention over the whole Qwen text with its own query x key mask, plain SDPA:
marked local), the ByT5 and SigLIP projections, and the per-sample reordering of the three text streams
into [valid image, valid ByT5, valid Qwen, invalid ...] with its validity mask. So the video tokens are
split at the patch embedding, the rotary tables (computed for the full grid) with them, and the reordered
text at the first block; later blocks get their shards from the block before.

The blocks' mask comes from `forward` whole, so every block splits its own copy with the text. The
processor pads it on the left with True for the video tokens it holds (`F.pad` by the local joint length
minus the local text length) and forms `v[q] & v[k]` over the local [video, text] sequence: with the mask
split like the text, that local v is exactly this rank's piece of the full validity vector, and cp_hooks
reads it from the mask's diagonal (keys follow their blocks, invalid queries' rows are zero, as SDPA
gives). The text length (729 image + 256 ByT5 + 1000 Qwen tokens at full size) is odd: anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

HUNYUAN_VIDEO15 = {
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "rope": {0: _ROPE, 1: _ROPE},
    "context_embedder.token_refiner": LocalAttention(),
    "transformer_blocks.0": {"encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*": {"attention_mask": ContextParallelInput(split_dim=1, expected_dims=2)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "HunyuanVideo15Transformer3DModel": PlanDeclaration(plan=HUNYUAN_VIDEO15),
}

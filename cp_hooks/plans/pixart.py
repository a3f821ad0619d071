"""PixArt-alpha / sigma (PixArtTransformer2DModel): image self-attention split, text cross-attention local.

`pos_embed` patchifies the latent and adds absolute positional embeddings for the whole image, so its
output is split. The blocks call SDPA directly (AttnProcessor2_0), which cp_hooks routes as
sequence-parallel attention; the cross-attention (`attn2`) over the replicated T5 text is therefore
marked LocalAttention(), and its text padding mask stays whole with its keys.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

PIXART = {
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "PixArtTransformer2DModel": PlanDeclaration(plan=PIXART),
}

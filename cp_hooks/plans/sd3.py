"""Stable Diffusion 3 / 3.5 (SD3Transformer2DModel): joint text + image attention, both streams split.

The latent enters as an image (B, C, H, W) and `pos_embed` patchifies it and adds absolute positional
embeddings for the whole image, so its output is split (each token keeps its own embedding); the text is
split after `context_embedder`. SD3.5's extra image-only attention (`attn2`) is self-attention over the
split image tokens. SD3's 333 text tokens (77 CLIP + 256 T5) do not divide: use the anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

SD3 = {
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "context_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "SD3Transformer2DModel": PlanDeclaration(plan=SD3),
}

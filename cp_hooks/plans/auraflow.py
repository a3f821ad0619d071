"""AuraFlow (AuraFlowTransformer2DModel): joint text + image attention (MMDiT, then single DiT), both split.

`pos_embed` patchifies the latent and adds learned absolute positions for the whole image; `forward` then
prepends 8 learned register tokens to the projected text. Both streams are split at the first joint block
(after the register tokens are in place), so every rank holds [a piece of register + text, a piece of the
image]. The single blocks concatenate the local text and image shards and slice them apart again by the
*local* text length, which stays consistent on every rank. There are no rotary tables and no masks (the
pipeline zeroes the padded T5 tokens instead), and attention is order-free over keys, so the local
[text, image] order needs nothing more. The processor calls SDPA directly, so the SDPA router carries it.
The image is gathered at `proj_out`, before the unpatchify reshape. 256 T5 tokens + 8 registers divide
by the usual degrees.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

AURAFLOW = {
    "joint_transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "AuraFlowTransformer2DModel": PlanDeclaration(plan=AURAFLOW),
}

"""DiT (DiTTransformer2DModel) and the generic Transformer2DModel: image self-attention split.

DiTTransformer2DModel: `pos_embed` patchifies the latent and adds the sincos positions of the whole grid, so
its output is split; class-label and timestep conditioning is per sample (AdaLN-Zero); gathered at `proj_out_2`,
the last per-token layer before the unpatchify reshape. No cross-attention. The blocks call SDPA directly.

Transformer2DModel has three input variants. Served: patched input with cross-attention (PixArt-alpha's
layout: `ada_norm_single`, T5 captions) and vectorized input (VQ-Diffusion: codebook indices embedded with the
positions of the whole grid). Both are split at the first block, have their text cross-attention (`attn2`,
plain SDPA over the replicated text) marked LocalAttention(), and are gathered at `norm_out`, which both have
before their per-sample modulation, output projection and reshape. Refused: continuous input (the variant
inside UNets: with `use_linear_projection=False` its 1x1 conv `proj_out` runs after `forward` reshapes the
tokens back to an image, so there is no module to gather at but the last block, which a plan cannot name for
every depth), and patched input without cross-attention (its blocks have no `attn2` to mark; diffusers loads
such checkpoints as DiTTransformer2DModel, which is served).
"""

from __future__ import annotations

from cp_hooks.plans.specs import (
    ContextParallelInput,
    ContextParallelOutput,
    LocalAttention,
    PlanDeclaration,
    UnsupportedConfig,
)

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

DIT = {
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "proj_out_2": _GATHER,
}

TRANSFORMER_2D = {
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    "transformer_blocks.*.attn2": LocalAttention(),
    "norm_out": _GATHER,
}

_REFUSED = (
    UnsupportedConfig(
        "",
        "is_input_continuous",
        (True,),
        "continuous input (the UNet variant) reshapes the tokens back to an image before its output "
        "projection, so the sequence would have to be gathered at the last block's output, which the "
        "plan cannot name for every depth.",
    ),
    UnsupportedConfig(
        "",
        "config.cross_attention_dim",
        (None,),
        "the plan marks the blocks' text cross-attention (attn2) local, and these blocks have none; "
        "load the checkpoint as DiTTransformer2DModel (as diffusers does for DiT), which is served.",
    ),
)


PLANS = {
    "DiTTransformer2DModel": PlanDeclaration(plan=DIT),
    "Transformer2DModel": PlanDeclaration(plan=TRANSFORMER_2D, unsupported=_REFUSED),
}

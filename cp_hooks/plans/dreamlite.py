"""DreamLite (DreamLiteTransformer2DModel): the DreamLite U-Net's attention stage; split inside every block.

The module starts with a GroupNorm over the whole latent and ends with a residual in (B, C, H, W) layout, and
its depth follows the U-Net level (`transformer_layers_per_block`), so there is no depth-independent module
to gather after the last block. As for Helios, the blocks run whole and the work inside them is split: the
self-attention (`attn1`: its input split, its output projection gathered) and the feed-forward (`ff`: split
in, gathered after `ff.net.2`). The text cross-attention (`attn2`) runs whole and locally: its keys are the
replicated text, and the U-Net's processor (DreamLiteAttnProcessor2_0, which the entry's `prepare` installs as
the U-Net does; it handles grouped-query attention) passes its parallel config for every call, so it is marked
LocalAttention().

Refused: `use_self_attention=False` (the U-Net's "remove self-attention" blocks have no `attn1` to split,
and no attention over the image at all: run them without context parallelism) and `only_cross_attention=True`
(`attn1` would attend to the replicated text, not to the split image).
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

DREAMLITE = {
    "transformer_blocks.*.attn1": {"hidden_states": _TOKENS},
    "transformer_blocks.*.attn1.to_out.0": _GATHER,
    "transformer_blocks.*.attn2": LocalAttention(),
    "transformer_blocks.*.ff": {"hidden_states": _TOKENS},
    "transformer_blocks.*.ff.net.2": _GATHER,
}

_REFUSED = (
    UnsupportedConfig(
        "",
        "config.use_self_attention",
        (False,),
        "without self-attention its tokens never meet, and the plan splits the self-attention.",
    ),
    UnsupportedConfig(
        "",
        "config.only_cross_attention",
        (True,),
        "its first attention attends to the replicated text instead of the split image tokens.",
    ),
)


PLANS = {
    "DreamLiteTransformer2DModel": PlanDeclaration(plan=DREAMLITE, unsupported=_REFUSED),
}

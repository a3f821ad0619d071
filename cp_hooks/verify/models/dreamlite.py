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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, UnsupportedConfig

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
    UnsupportedConfig("", "config.use_self_attention", (False,),
                      "without self-attention its tokens never meet, and the plan splits the self-attention."),
    UnsupportedConfig("", "config.only_cross_attention", (True,),
                      "its first attention attends to the replicated text instead of the split image tokens."),
)


# A U-Net level as DreamLite builds it: qk RMSNorm, grouped-query attention (2 key/value heads), GEGLU ff.
_DREAMLITE = dict(num_attention_heads=4, attention_head_dim=8, in_channels=8, num_layers=2, norm_num_groups=2,
                  cross_attention_dim=16, qk_norm="rms_norm", num_kv_heads=2, ff_mult=2)


def _install_processor(model, g):
    """The processor the DreamLite U-Net installs on every attention layer of its attention stages."""
    from diffusers.models.unets.unet_dreamlite import DreamLiteAttnProcessor2_0

    for block in model.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            attn.set_processor(DreamLiteAttnProcessor2_0())


def _dreamlite(config, g, text=9, valid=(4, 9), height=4, width=6):
    # The U-Net passes its feature map, the prompt embeddings and the text mask turned into an additive
    # (B, 1, L) bias (CFG batch: negative prompt first).
    batch = len(valid)
    mask = padding_mask(batch, text, list(valid), dtype=torch.float32)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["cross_attention_dim"]),
        encoder_attention_mask=((1 - mask) * -10000.0)[:, None],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("DreamLiteTransformer2DModel", DREAMLITE, _DREAMLITE,
               {"unet": _dreamlite, "linear_projection": _dreamlite},
               case_configs={"linear_projection": dict(use_linear_projection=True)}, unsupported=_REFUSED,
               prepare=_install_processor,
               note="U-Net attention stage: self-attention and feed-forward split inside each block (any depth); "
                    "text cross-attention local; use_self_attention=False refused"),
]

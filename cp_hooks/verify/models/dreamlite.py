"""Verification of the dreamlite family's plans (`cp_hooks.plans.dreamlite`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

# A U-Net level as DreamLite builds it: qk RMSNorm, grouped-query attention (2 key/value heads), GEGLU ff.
_DREAMLITE = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=8,
    num_layers=2,
    norm_num_groups=2,
    cross_attention_dim=16,
    qk_norm="rms_norm",
    num_kv_heads=2,
    ff_mult=2,
)


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
    ModelEntry(
        "DreamLiteTransformer2DModel",
        config=_DREAMLITE,
        cases={"unet": _dreamlite, "linear_projection": _dreamlite},
        case_configs={"linear_projection": dict(use_linear_projection=True)},
        prepare=_install_processor,
        note="U-Net attention stage: self-attention and feed-forward split inside each block (any depth); "
        "text cross-attention local; use_self_attention=False refused",
    ),
]

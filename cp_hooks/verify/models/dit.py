"""Verification of the dit family's plans (`cp_hooks.plans.dit`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_DIT = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    patch_size=2,
    num_embeds_ada_norm=10,
)


def _dit(config, g, size=8):
    # CFG: the class labels, then the null class (num_embeds_ada_norm) for the unconditional half.
    latents = randn(g, 1, config["in_channels"], size, size).repeat(2, 1, 1, 1)
    return dict(
        hidden_states=latents,
        timestep=torch.full((2,), 500.0),
        class_labels=torch.tensor([3, config["num_embeds_ada_norm"]]),
        return_dict=False,
    )


# PixArt-alpha's layout of the generic class.
_PATCHED = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    cross_attention_dim=32,
    caption_channels=16,
    sample_size=8,
    patch_size=2,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
)
# VQ-Diffusion: codebook indices (the last one is the mask token), CLIP text, ada_norm timestep embedding.
_VECTORIZED = dict(
    in_channels=None,
    out_channels=None,
    patch_size=None,
    num_vector_embeds=17,
    sample_size=4,
    caption_channels=None,
    norm_type="ada_norm",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    num_embeds_ada_norm=10,
    activation_fn="geglu-approximate",
)


def _patched(config, g, text=9, size=8):
    return dict(
        hidden_states=randn(g, 2, config["in_channels"], size, size),
        encoder_hidden_states=randn(g, 2, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(2, text, [text, 5], dtype=torch.long),
        timestep=torch.tensor([999, 999]),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )


def _vectorized(config, g, text=7):
    pixels = config["sample_size"] ** 2
    codes = torch.randint(0, config["num_vector_embeds"], (1, pixels), generator=g).repeat(2, 1)
    return dict(
        hidden_states=codes,
        encoder_hidden_states=randn(g, 2, text, config["cross_attention_dim"]),
        timestep=torch.tensor(4),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("DiTTransformer2DModel", config=_DIT, cases={"c2i": _dit}, note="class-conditional CFG batch"),
    ModelEntry(
        "Transformer2DModel",
        config=_PATCHED,
        cases={"patched": _patched, "vq": _vectorized},
        case_configs={"vq": _VECTORIZED},
        note="patched input with text cross-attention (PixArt-alpha layout) and vectorized input "
        "(VQ-Diffusion); continuous input and patched input without cross-attention refused",
    ),
]

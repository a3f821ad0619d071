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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, UnsupportedConfig

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
    UnsupportedConfig("", "is_input_continuous", (True,),
                      "continuous input (the UNet variant) reshapes the tokens back to an image before its output "
                      "projection, so the sequence would have to be gathered at the last block's output, which the "
                      "plan cannot name for every depth."),
    UnsupportedConfig("", "config.cross_attention_dim", (None,),
                      "the plan marks the blocks' text cross-attention (attn2) local, and these blocks have none; "
                      "load the checkpoint as DiTTransformer2DModel (as diffusers does for DiT), which is served."),
)


_DIT = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
            patch_size=2, num_embeds_ada_norm=10)


def _dit(config, g, size=8):
    # CFG: the class labels, then the null class (num_embeds_ada_norm) for the unconditional half.
    latents = randn(g, 1, config["in_channels"], size, size).repeat(2, 1, 1, 1)
    return dict(hidden_states=latents, timestep=torch.full((2,), 500.0),
                class_labels=torch.tensor([3, config["num_embeds_ada_norm"]]), return_dict=False)


# PixArt-alpha's layout of the generic class.
_PATCHED = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                cross_attention_dim=32, caption_channels=16, sample_size=8, patch_size=2, norm_type="ada_norm_single",
                norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True, activation_fn="gelu-approximate",
                num_embeds_ada_norm=1000)
# VQ-Diffusion: codebook indices (the last one is the mask token), CLIP text, ada_norm timestep embedding.
_VECTORIZED = dict(in_channels=None, out_channels=None, patch_size=None, num_vector_embeds=17, sample_size=4,
                   caption_channels=None, norm_type="ada_norm", norm_elementwise_affine=True, norm_eps=1e-5,
                   num_embeds_ada_norm=10, activation_fn="geglu-approximate")


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
    return dict(hidden_states=codes, encoder_hidden_states=randn(g, 2, text, config["cross_attention_dim"]),
                timestep=torch.tensor(4), return_dict=False)


ENTRIES = [
    ModelEntry("DiTTransformer2DModel", DIT, _DIT, {"c2i": _dit}, note="class-conditional CFG batch"),
    ModelEntry("Transformer2DModel", TRANSFORMER_2D, _PATCHED, {"patched": _patched, "vq": _vectorized},
               case_configs={"vq": _VECTORIZED}, unsupported=_REFUSED,
               note="patched input with text cross-attention (PixArt-alpha layout) and vectorized input "
                    "(VQ-Diffusion); continuous input and patched input without cross-attention refused"),
]

"""PixArt-alpha / sigma (PixArtTransformer2DModel): image self-attention split, text cross-attention local.

`pos_embed` patchifies the latent and adds absolute positional embeddings for the whole image, so its
output is split. The blocks call SDPA directly (AttnProcessor2_0), which cp_hooks routes as
sequence-parallel attention; the cross-attention (`attn2`) over the replicated T5 text is therefore
marked LocalAttention(), and its text padding mask stays whole with its keys.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

PIXART = {
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_PIXART = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
               cross_attention_dim=32, caption_channels=16, sample_size=8, patch_size=2, norm_num_groups=1,
               use_additional_conditions=False)


def _pixart(config, g, text=9, height=8, width=12):
    return dict(
        hidden_states=randn(g, 2, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 2, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(2, text, [text, 5], dtype=torch.long),
        timestep=torch.tensor([999, 999]),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("PixArtTransformer2DModel", PIXART, _PIXART, {"t2i": _pixart},
               note="batch of 2 with a padded text mask; cross-attention marked LocalAttention()"),
]

"""HunyuanVideo (HunyuanVideoTransformer3DModel): joint video + text attention, both streams split.

The token refiner (`context_embedder`) needs the whole text and its padding mask: it pools the text over
the mask and runs self-attention with a query x key mask. So the text enters it whole and its output is
split; the padding mask is split at the model's input (for the blocks) and gathered back for the refiner.
`forward` then builds the blocks' [video, text] key-padding mask from the *local* lengths and the local
`encoder_attention_mask.sum()`; the pipeline's text mask is right-padded (valid tokens first), so every
contiguous shard of it is right-padded too, and that local construction is exactly this rank's piece of
the full mask. The refiner's attention (plain SDPA over the whole text) runs locally. The 3-D rotary table
is computed for the full video grid and split with the video tokens.

Refused (not covered): `image_condition_type="token_replace"` (HunyuanVideo-I2V v2), whose blocks modulate
the first `first_frame_num_tokens` tokens of the sequence they receive: a plain int from `forward` that a plan
cannot shift to each rank's shard.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, UnsupportedConfig

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

HUNYUAN_VIDEO = {
    "": {"encoder_attention_mask": ContextParallelInput(split_dim=1, expected_dims=2)},
    "context_embedder": {
        "attention_mask": ContextParallelOutput(gather_dim=1, expected_dims=2),
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "context_embedder.token_refiner": LocalAttention(),
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "rope": {0: _ROPE, 1: _ROPE},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_REFUSED = (
    UnsupportedConfig("", "config.image_condition_type", ("token_replace",),
                      "its blocks modulate the first frame's tokens, found by a plain int count from the start of "
                      "the sequence, which each rank's shard does not share."),
)

_HUNYUAN = dict(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=16, num_layers=1,
                num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=32,
                pooled_projection_dim=16, rope_axes_dim=(4, 6, 6), guidance_embeds=True)
# I2V (latent_concat): the pipeline concatenates [noisy latents, image latents, frame mask] along channels.
_I2V = dict(in_channels=9, image_condition_type="latent_concat")


def _hunyuan(config, g, text=10, valid=(10, 6), frames=2, height=8, width=12):
    batch = len(valid)  # a batch of prompts (or true CFG's two passes) with different valid lengths
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.full((batch,), 700.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        # The pipeline casts the mask to the transformer's dtype.
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.float32),
        pooled_projections=randn(g, batch, config["pooled_projection_dim"]),
        guidance=torch.full((batch,), 6000.0),  # guidance_scale * 1000
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("HunyuanVideoTransformer3DModel", HUNYUAN_VIDEO, _HUNYUAN,
               {"t2v": _hunyuan, "i2v": lambda c, g: _hunyuan(c, g, text=13, valid=(13, 9))},
               case_configs={"i2v": _I2V}, anything=True,
               unsupported=_REFUSED,
               note="padded text mask (batch of 2 prompts); the token refiner gets the whole text and mask (gathered "
                    "inputs); I2V latent_concat, odd text length; token_replace I2V refused (its blocks take the first "
                    "frame's token count as a plain int)"),
]

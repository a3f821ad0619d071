"""HunyuanVideo FramePack (HunyuanVideoFramepackTransformer3DModel): the packed sequence split from the first
block to the last.

`forward` packs the video tokens as [4x history, 2x history, clean latents, current chunk] (`torch.cat` in
`_pack_history_states`, no module) together with their rotary tables: each table is computed by `rope` for the
whole grid of its piece, and the 2x / 4x tables are padded and average-pooled over that grid, so no table can
be split before the packing. The condition is [SigLIP image tokens, refined text], cut to its valid length
(a batch of one, as the pipeline calls it: the positive and the negative prompt run as two calls). So the
packed video and the condition are split at the input of the first double block (`transformer_blocks.0`),
every block splits its own copy of the packed rotary table (the parameter is `freqs_cis` in the double blocks,
`image_rotary_emb` in the single ones), and the whole video is gathered again at the output of the last
single block (`single_transformer_blocks.-1`): after it `forward` keeps `hidden_states[:, -original_context_length:]`,
the current chunk found by a plain int counted from the end of the whole packed sequence, before `norm_out`.
The token refiner (`context_embedder`) and the image projection run before the split, on the whole text on
every rank; the refiner's attention runs locally. The condition's length (729 image tokens plus the valid
text) and the packed video's (history pieces of different sizes) rarely divide: anything flags, odd lengths.

Not covered: a batch of more than one (several prompts or `num_videos_per_prompt > 1`): `forward` then builds
the blocks' key mask over the whole [video, condition] sequence, which a split along one dim cannot cut into
this rank's [video shard, condition shard]; the attention refuses its shape (it is not silently wrong).
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=2)

HUNYUAN_VIDEO_FRAMEPACK = {
    "context_embedder.token_refiner": LocalAttention(),
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "transformer_blocks.*": {"freqs_cis": (_TABLE, _TABLE)},
    "single_transformer_blocks.*": {"image_rotary_emb": (_TABLE, _TABLE)},
    # Output 1 (the condition stream) is discarded by forward: only the video is gathered.
    "single_transformer_blocks.-1": [ContextParallelOutput(gather_dim=1, expected_dims=3), None],
}

_FRAMEPACK = dict(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=16, num_layers=1,
                  num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=32,
                  pooled_projection_dim=16, rope_axes_dim=(4, 6, 6), guidance_embeds=True, has_image_proj=True,
                  image_proj_dim=24, has_clean_x_embedder=True)


def _framepack(config, g, frames=2, height=8, width=10, text=10, valid=7, image_tokens=5, history=(4, 2, 1),
               anti_drifting=True):
    """One call of the FramePack pipeline's denoising loop (history sizes scaled down from [16, 2, 1])."""
    channels = config["in_channels"]
    long, mid, short = history  # 4x, 2x and 1x history frames
    if anti_drifting:  # inverted anti-drifting sampling: [prefix, padding, current, 1x, 2x, 4x]
        padding = frames
        indices = torch.arange(1 + padding + frames + short + mid + long)
        prefix, _, current, i_short, i_mid, i_long = indices.split([1, padding, frames, short, mid, long])
    else:  # vanilla (F1) sampling: [prefix, 4x, 2x, 1x, current]
        indices = torch.arange(1 + long + mid + short + frames)
        prefix, i_long, i_mid, i_short, current = indices.split([1, long, mid, short, frames])
    return dict(
        hidden_states=randn(g, 1, channels, frames, height, width),
        timestep=torch.full((1,), 700.0),
        encoder_hidden_states=randn(g, 1, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(1, text, [valid], dtype=torch.float32),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        image_embeds=randn(g, 1, image_tokens, config["image_proj_dim"]),
        indices_latents=current,
        guidance=torch.full((1,), 10000.0),
        latents_clean=randn(g, 1, channels, 1 + short, height, width),  # [first-frame latents, 1x history]
        indices_latents_clean=torch.cat([prefix, i_short]),
        latents_history_2x=randn(g, 1, channels, mid, height, width),
        indices_latents_history_2x=i_mid,
        latents_history_4x=randn(g, 1, channels, long, height, width),
        indices_latents_history_4x=i_long,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("HunyuanVideoFramepackTransformer3DModel", HUNYUAN_VIDEO_FRAMEPACK, _FRAMEPACK,
               {"anti_drifting": _framepack, "vanilla": lambda c, g: _framepack(c, g, anti_drifting=False)},
               anything=True,
               note="packed [4x, 2x, clean history, current] video and [image, text] condition split from the first "
                    "block, gathered at the last single block (single_transformer_blocks.-1) before forward keeps "
                    "the current chunk; refiner local; batch of one (a batch's key mask is built whole)"),
]

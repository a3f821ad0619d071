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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

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


PLANS = {
    "HunyuanVideoFramepackTransformer3DModel": PlanDeclaration(plan=HUNYUAN_VIDEO_FRAMEPACK),
}

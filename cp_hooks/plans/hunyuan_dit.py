"""Hunyuan-DiT (HunyuanDiT2DModel): image self-attention split; the text cross-attention runs locally.

`pos_embed` only patchifies (no absolute positions), so its output is split; the 2-D rotary table (cos,
sin), one row per image token, is computed by the pipeline for the whole grid and split like the image.
The long skip connections (block i's output added into block num_layers - 1 - i) join shards of the same
tokens, so they need nothing. The text (CLIP/Bert tokens then T5 tokens; padded positions replaced by a
learned padding embedding, so the text masks never reach attention) stays whole on every rank: the
cross-attention `attn2` calls SDPA directly and is marked local, its queries rotated with the local table.
The T5 attention pooler of `time_extra_emb` pools the whole text with `F.multi_head_attention_forward`,
which calls SDPA inside; today's SDPA router sees only the outer call and leaves it alone, but it is marked
local too, so that no router that sees the inner call can take it for sequence-parallel attention.
The image is gathered at `proj_out`, before the unpatchify.

Not covered: ControlNet residuals (`controlnet_block_samples`, a list of full-length tensors added to the
skips), which the plan does not split.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

HUNYUAN_DIT = {
    "": {"image_rotary_emb": [_ROPE, _ROPE]},
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "time_extra_emb.pooler": LocalAttention(),
    "blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "HunyuanDiT2DModel": PlanDeclaration(plan=HUNYUAN_DIT),
}

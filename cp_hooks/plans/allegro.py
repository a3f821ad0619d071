"""Allegro (AllegroTransformer3DModel): video self-attention split; T5 cross-attention local.

The video tokens are split at the input of the first block (`transformer_blocks.0`): `forward` patchifies
frame by frame and flattens (frames, patches) into one sequence just before the blocks, with no positional
table of its own (`pos_embed` has none). The final norm, modulation and `proj_out` are per token, so the
gather is at `proj_out`, before the unpatchify reshape.

Rotary embedding: the pipeline passes `image_rotary_emb=((freqs_t, freqs_h, freqs_w), (pos_t, pos_h, pos_w))`,
per-axis (cos, sin) frequency tables indexed by the video grid's coordinates, and per-token position ids of
shape (1, S) into them; the processor looks each token's angles up with `F.embedding(pos, table)`. So the
position ids are split with the tokens (a nested spec reaching the second tuple) and the tables, indexed by
coordinate and not by token, stay whole (None).

The self-attention (`attn1`) calls SDPA directly and is routed as context-parallel attention. The
cross-attention (`attn2`) attends to the replicated T5 text, with its padding mask turned into a key bias in
`forward`; its processor calls SDPA directly too, so it is marked LocalAttention().
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_POSITIONS = ContextParallelInput(split_dim=1, expected_dims=2)

ALLEGRO = {
    # (tables: whole, (pos_t, pos_h, pos_w): split with the tokens)
    "": {"image_rotary_emb": (None, (_POSITIONS, _POSITIONS, _POSITIONS))},
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "AllegroTransformer3DModel": PlanDeclaration(plan=ALLEGRO),
}

"""AnyFlow (AnyFlowTransformer3DModel served; AnyFlowFARTransformer3DModel refused, see the reason below).

AnyFlowTransformer3DModel is the Wan 2.1 backbone with a dual-timestep embedding (source `t`, target `r`), one
timestep per latent frame, (B, F). The video tokens are split at the first block (`blocks.0`), after the patch
embedding has flattened the (frames, height, width) grid into one sequence.

Per-token conditioning: `condition_embedder` expands the per-frame timestep embedding to every token of its
frame (`repeat_interleave` by the tokens per frame), returning a (B, S, D) embedding (the output norm's
shift and scale) and a (B, S, 6 * D) projection (every block's modulation). Both are split at its output, with
the tokens; the output norm, its modulation and `proj_out` are then per token, so the gather is at
`proj_out`, before the unpatchify reshape. The video-to-video pipeline gives the conditioning frames timestep
0, so the rows differ along the sequence and must stay aligned with their tokens.

Rotary embedding: `rope` returns a dict, `{"query": table, "key": table}` (the same (1, 1, S, D / 2) complex
table twice) for the whole grid, handed to every block. It is split in every block's input with a dict spec
keyed like the value (split dim 2). (An output-index spec on `rope` itself cannot be used: a module whose
whole output is a dict is not indexed by the split hook.)

The text cross-attention (`attn2`) attends to the replicated UMT5 text (and I2V image tokens), but its
processor passes its parallel config for every call, so it is marked LocalAttention().
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_PER_TOKEN = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
_TABLE = ContextParallelInput(split_dim=2, expected_dims=4)  # (1, 1, S, head_dim / 2) complex

ANYFLOW = {
    "condition_embedder": {0: _PER_TOKEN, 1: _PER_TOKEN},
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "blocks.*": {"rotary_emb": {"query": _TABLE, "key": _TABLE}},
    "blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "AnyFlowTransformer3DModel": PlanDeclaration(plan=ANYFLOW),
}

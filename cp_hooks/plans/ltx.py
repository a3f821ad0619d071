"""LTX-Video (LTXVideoTransformer3DModel): video self-attention split; T5 text cross-attention local.

The text (and its padding mask) stays whole on every rank and the cross-attention (`attn2`) runs
locally: LTX's processor passes its parallel config for every call, so `attn2` is marked LocalAttention().
The rotary table is computed in `forward` for the whole sequence (from the grid size or the pipeline's
`video_coords`) and split with the tokens. Image-to-video and conditioning pipelines pass one timestep per
token, (B, S): split with the tokens; the usual (B,) timestep is left whole (skip_other_dims).
LTXConditionPipeline *without* conditions passes a (B, 1) timestep, which a plan cannot tell from a
per-token one: it is refused on every rank (a length of 1 does not divide), not computed wrongly.

diffusers' own `_cp_plan` splits the text and its mask instead, which is exact for (B,) timesteps but
sends the cross-attention's keys around the ring, and it leaves a per-token timestep whole, so the
(B, S) modulation meets (B, S / N) tokens and the forward fails.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_ROPE = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)

LTX = {
    "": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "timestep": ContextParallelInput(split_dim=1, expected_dims=2, skip_other_dims=True),
    },
    "rope": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "LTXVideoTransformer3DModel": PlanDeclaration(plan=LTX),
}

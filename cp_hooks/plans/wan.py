"""Wan 2.x family (Wan, ChronoEdit, SkyReels-V2): video self-attention split; text cross-attention local.

The text (and I2V image) context is replicated: the Wan and ChronoEdit processors pass
parallel_config=None for cross-attention, so those calls run locally. SkyReels-V2's processor passes its
config for every call, so its cross-attention (`attn2`) is marked LocalAttention(). Rotary embeddings
are split after they are computed for the full video grid.

Per-token timesteps: Wan 2.2 TI2V passes a (B, S) timestep (one per video token), split with the tokens;
the usual (B,) timestep is left whole (skip_other_dims). SkyReels-V2's diffusion forcing passes one
timestep per frame and expands it to tokens inside `forward` (a (B, 6, S, D) modulation for every block and
a (B, S, D) one for the output norm), so its plan splits the blocks' `temb` and gathers at `norm_out`,
whose output is modulated by the full-length embedding; `proj_out` then runs on the whole sequence.

VACE (WanVACETransformer3DModel): the control video's tokens are zero-padded in `forward` to the video's
length (the pipeline passes as many control frames as latent frames, reference images prepended to both),
so they are split after that padding, at the first VACE block, together with that block's copy of the video
tokens (it adds them); the main blocks split the video at `blocks.0`. The VACE blocks' hints come out split
and are added to split video tokens. Later VACE blocks also receive the whole video but do not use it.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_ROPE = {
    0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
    1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
}

WAN = {
    "": {"timestep": ContextParallelInput(split_dim=1, expected_dims=2, skip_other_dims=True)},
    "rope": _ROPE,
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)

WAN_VACE = {
    "rope": _ROPE,
    "vace_blocks.0": {"hidden_states": _TOKENS, "control_hidden_states": _TOKENS},
    "blocks.0": {"hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

SKYREELS_V2 = {
    "rope": _ROPE,
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "blocks.*": {"temb": ContextParallelInput(split_dim=2, expected_dims=4, skip_other_dims=True)},
    "blocks.*.attn2": LocalAttention(),
    "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "WanTransformer3DModel": PlanDeclaration(plan=WAN),
    "ChronoEditTransformer3DModel": PlanDeclaration(plan=WAN),
    "SkyReelsV2Transformer3DModel": PlanDeclaration(plan=SKYREELS_V2),
    "WanVACETransformer3DModel": PlanDeclaration(plan=WAN_VACE),
}

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
"""

from ..plan import ContextParallelInput, ContextParallelOutput, LocalAttention

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

SKYREELS_V2 = {
    "rope": _ROPE,
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "blocks.*": {"temb": ContextParallelInput(split_dim=2, expected_dims=4, skip_other_dims=True)},
    "blocks.*.attn2": LocalAttention(),
    "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

PLANS = {
    "WanTransformer3DModel": WAN,
    "ChronoEditTransformer3DModel": WAN,
    "SkyReelsV2Transformer3DModel": SKYREELS_V2,
}

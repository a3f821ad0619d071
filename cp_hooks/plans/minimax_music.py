"""MiniMax Music 3: the flow-matching DiT (MiniMaxMusic3Transformer1DModel) and the RVQ depth decoder.

MiniMaxMusic3Transformer1DModel: `forward` prepends the timestep embedding as one extra token and drops it after
the blocks by position (`hidden_states[:, 1:]`, before `proj_out`), so a shard held by any rank but the first
would lose a real token there: the sequence cannot stay split up to `proj_out`, and a plan cannot name "the
last block" for every depth. The blocks therefore run whole and the work inside them is split, as for Helios:
the self-attention (its tokens and the rotary table, which `forward` computes for the whole [timestep, audio]
sequence and the plan splits at `rotary_emb`'s output) and the SwiGLU feed-forward (`ff_in`'s input), each
gathered right after its output projection. The condition is frame-aligned with the latents (one row per audio
frame) and enters through the channels before the blocks, so it needs nothing. The latent length is any
integer (chunks of the song) plus the timestep token: anything flags.

MiniMaxMusic3RVQDepthDecoder is the autoregressive local language model that predicts one frame's residual
codebooks: its sequence is [global hidden state, semantic code, c1 .. c6], 2 to 8 steps, with causal attention;
its positions come from the local length in `forward`, so it is split at the first layer and gathered at the
final norm. Served and verified (causal ring and Ulysses attention are exact), but short by construction:
context parallelism cannot speed it up.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

MINIMAX_MUSIC3 = {
    "rotary_emb": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.*.attn": {"hidden_states": _TOKENS},
    "transformer_blocks.*.attn.to_out.0": _GATHER,
    "transformer_blocks.*.ff_in": {"input": _TOKENS},
    "transformer_blocks.*.ff_out": _GATHER,
}

MINIMAX_MUSIC3_DEPTH = {
    "layers.0": {"hidden_states": _TOKENS},
    "norm": _GATHER,
}


PLANS = {
    "MiniMaxMusic3Transformer1DModel": PlanDeclaration(plan=MINIMAX_MUSIC3),
    "MiniMaxMusic3RVQDepthDecoder": PlanDeclaration(plan=MINIMAX_MUSIC3_DEPTH),
}

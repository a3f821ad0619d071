"""Stable Audio (StableAudioDiTModel) and Stable Audio 3 (StableAudio3DiTModel): audio-latent self-attention split.

Stable Audio 1: `forward` prepends one global (duration + timestep) token to the audio tokens, so the sequence
is [global, audio]; it is split at the first block and gathered at `proj_out`, before `forward` drops the global
token. The pipeline passes the rotary table for that whole sequence (latent length + 1, partial rotary over half
of each head): it is split with the tokens at the model's input. The processor calls SDPA directly, so the
cross-attention over the replicated T5 text + duration tokens (`attn2`) is marked LocalAttention(). The
pipeline passes no masks (it zeroes padded text instead). 1024 latents + 1 global token: anything flags.

Stable Audio 3: `forward` prepends `num_memory_tokens` learned tokens and removes them after the blocks by a
plain int (`x[:, num_memory_tokens:]` before `proj_out`, and the inpainting `local_add_cond` is added inside each
block to `hidden_states[:, num_memory_tokens:]`). Those ints describe the whole sequence, so the blocks run
whole and the work inside them is split, as for Helios: the self-attention (tokens and the rotary table, which
`forward` computes for the whole sequence; the processor takes its last `seq_len` rows, i.e. all of a split
table), the cross-attention (its queries, from the split output of `cross_attend_norm`; the context is
replicated and its processor passes its config for every call, so it is marked LocalAttention()) and the
feed-forward, each gathered right after its output projection. The text padding mask never reaches attention
(`forward` swaps padded text for a learned embedding). A fresh SA3 model zero-initialises the convolutions
around the blocks and each block's `to_local_embed` output: the entry redraws them (`redraw`) so the inpainting
path shows.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

STABLE_AUDIO = {
    "": {"rotary_embedding": [_ROPE, _ROPE]},
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": _GATHER,
}

STABLE_AUDIO3 = {
    "transformer_blocks.*.self_attn": {"hidden_states": _TOKENS, "rope": _ROPE},
    "transformer_blocks.*.self_attn.to_out": _GATHER,
    "transformer_blocks.*.cross_attend_norm": {0: ContextParallelInput(1, 3, split_output=True)},
    "transformer_blocks.*.cross_attn": LocalAttention(),
    "transformer_blocks.*.cross_attn.to_out": _GATHER,
    "transformer_blocks.*.ff": {"hidden_states": _TOKENS},
    "transformer_blocks.*.ff.proj_out": _GATHER,
}


PLANS = {
    "StableAudioDiTModel": PlanDeclaration(plan=STABLE_AUDIO),
    "StableAudio3DiTModel": PlanDeclaration(plan=STABLE_AUDIO3),
}

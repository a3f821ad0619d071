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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

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


_MUSIC = dict(in_channels=8, condition_dim=12, num_layers=2, num_attention_heads=4, attention_head_dim=8,
              ff_inner_dim=48, rotary_dim=4, fourier_embedding_dim=16)


def _music(config, g, length=13, unconditional=False):
    # The guider runs the conditional and the unconditional (zero condition) branches as separate calls.
    condition = randn(g, 1, length, config["condition_dim"])
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], length),
        timestep=torch.full((1,), 0.3),
        encoder_hidden_states=torch.zeros_like(condition) if unconditional else condition,
        return_dict=False,
    )


_DEPTH = dict(hidden_size=32, num_layers=2, num_attention_heads=4, intermediate_size=48, audio_vocab_size=16,
              num_codebooks=8, max_position_embeddings=16)


def _depth(config, g, steps=7):
    # [conditional, unconditional] rows; the longest call holds the global state, the semantic code and c1..c5.
    return dict(inputs_embeds=randn(g, 2, steps, config["hidden_size"]))


ENTRIES = [
    ModelEntry("MiniMaxMusic3Transformer1DModel", MINIMAX_MUSIC3, _MUSIC,
               {"t2m": _music, "unconditional": lambda c, g: _music(c, g, unconditional=True)}, anything=True,
               note="blocks run whole ([timestep token, audio], the token dropped by position): attention and "
                    "feed-forward split inside each block"),
    ModelEntry("MiniMaxMusic3RVQDepthDecoder", MINIMAX_MUSIC3_DEPTH, _DEPTH, {"frame": _depth}, anything=True,
               note="autoregressive codebook decoder, causal attention over 2-8 steps: short by construction "
                    "(verified, no speed-up to expect)"),
]

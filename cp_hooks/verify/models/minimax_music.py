"""Verification of the minimax_music family's plans (`cp_hooks.plans.minimax_music`, where each plan's reasons are):
tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_MUSIC = dict(
    in_channels=8,
    condition_dim=12,
    num_layers=2,
    num_attention_heads=4,
    attention_head_dim=8,
    ff_inner_dim=48,
    rotary_dim=4,
    fourier_embedding_dim=16,
)


def _music(config, g, length=13, unconditional=False):
    # The guider runs the conditional and the unconditional (zero condition) branches as separate calls.
    condition = randn(g, 1, length, config["condition_dim"])
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], length),
        timestep=torch.full((1,), 0.3),
        encoder_hidden_states=torch.zeros_like(condition) if unconditional else condition,
        return_dict=False,
    )


_DEPTH = dict(
    hidden_size=32,
    num_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    audio_vocab_size=16,
    num_codebooks=8,
    max_position_embeddings=16,
)


def _depth(config, g, steps=7):
    # [conditional, unconditional] rows; the longest call holds the global state, the semantic code and c1..c5.
    return dict(inputs_embeds=randn(g, 2, steps, config["hidden_size"]))


ENTRIES = [
    ModelEntry(
        "MiniMaxMusic3Transformer1DModel",
        config=_MUSIC,
        cases={"t2m": _music, "unconditional": lambda c, g: _music(c, g, unconditional=True)},
        anything=True,
        note="blocks run whole ([timestep token, audio], the token dropped by position): attention and "
        "feed-forward split inside each block",
    ),
    ModelEntry(
        "MiniMaxMusic3RVQDepthDecoder",
        config=_DEPTH,
        cases={"frame": _depth},
        anything=True,
        note="autoregressive codebook decoder, causal attention over 2-8 steps: short by construction "
        "(verified, no speed-up to expect)",
    ),
]

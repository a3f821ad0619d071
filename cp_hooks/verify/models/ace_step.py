"""Verification of the ace_step family's plans (`cp_hooks.plans.ace_step`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

# Two layers: one sliding-window (window 4, shorter than the tiny sequence, so the band is real) and one full.
_ACE = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    in_channels=24,
    audio_acoustic_hidden_dim=8,
    patch_size=2,
    sliding_window=4,
    encoder_hidden_size=24,
)


def _ace(config, g, frames=25, condition=11):
    batch = 2  # CFG: [prompt condition, learned null condition]
    acoustic = config["audio_acoustic_hidden_dim"]
    context = config["in_channels"] - acoustic  # [source latents, chunk mask] along channels
    return dict(
        hidden_states=randn(g, batch, frames, acoustic),
        timestep=torch.full((batch,), 0.8),
        timestep_r=torch.full((batch,), 0.8),  # r = t for standard inference
        encoder_hidden_states=randn(g, batch, condition, config["encoder_hidden_size"]),
        context_latents=randn(g, 1, frames, context).repeat(batch, 1, 1),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "AceStepTransformer1DModel",
        config=_ACE,
        cases={"t2m": _ace},
        anything=True,
        note="odd latent length (patch padding); self-attention runs whole on every rank (q/k/v gathered): "
        "the sliding-window layers' banded mask cannot be split and a plan cannot tell them apart",
    ),
]

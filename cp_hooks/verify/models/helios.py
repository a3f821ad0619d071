"""Verification of the helios family's plans (`cp_hooks.plans.helios`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_HELIOS = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    rope_dim=(4, 4, 4),
)


def _helios(config, g, frames=2, height=16, width=8, text=9, history=(8, 2, 1)):
    channels = config["in_channels"]
    inputs = dict(
        hidden_states=randn(g, 1, channels, frames, height, width),
        timestep=torch.full((1,), 700.0),
        encoder_hidden_states=randn(g, 1, text, config["text_dim"]),
        return_dict=False,
    )
    if history:
        long, mid, short = history
        indices = torch.arange(1 + long + mid + short + frames)
        prefix, i_long, i_mid, i_short, i_current = indices.split([1, long, mid, short, frames])
        inputs.update(
            indices_hidden_states=i_current[None],
            indices_latents_history_short=torch.cat([prefix, i_short])[None],
            indices_latents_history_mid=i_mid[None],
            indices_latents_history_long=i_long[None],
            latents_history_short=randn(g, 1, channels, 1 + short, height, width),
            latents_history_mid=randn(g, 1, channels, mid, height, width),
            latents_history_long=randn(g, 1, channels, long, height, width),
        )
    return inputs


ENTRIES = [
    ModelEntry(
        "HeliosTransformer3DModel",
        config=_HELIOS,
        cases={"t2v": lambda c, g: _helios(c, g, history=None), "history": _helios},
        note="long / mid / short history latents before the current chunk; attention and feed-forward "
        "split inside each block (diffusers' plan with wildcards); is_amplify_history=True refused",
    ),
]

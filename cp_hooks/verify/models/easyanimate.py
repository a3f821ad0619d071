"""Verification of the easyanimate family's plans (`cp_hooks.plans.easyanimate`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LATENT = 4
# One MMDiT block (separate text projections and text feed-forward) and one plain block.
_EASYANIMATE = dict(
    num_attention_heads=4,
    attention_head_dim=16,
    in_channels=_LATENT,
    out_channels=_LATENT,
    patch_size=2,
    num_layers=2,
    mmdit_layers=1,
    time_embed_dim=16,
    text_embed_dim=32,
)
# Inpaint (I2V): [latents, mask (1 channel), masked video latents]; control: [latents, control, reference image].
_INPAINT = dict(in_channels=2 * _LATENT + 1)
_CONTROL = dict(in_channels=3 * _LATENT)


def _easyanimate(config, g, text=8, frames=2, height=8, width=12, extra=None):
    batch = 2  # classifier-free guidance batch
    inputs = dict(
        hidden_states=randn(g, batch, _LATENT, frames, height, width),
        timestep=torch.full((batch,), 600.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        return_dict=False,
    )
    if extra:
        name = "inpaint_latents" if extra == "inpaint" else "control_latents"
        inputs[name] = randn(g, batch, config["in_channels"] - _LATENT, frames, height, width)
    return inputs


ENTRIES = [
    ModelEntry(
        "EasyAnimateTransformer3DModel",
        config=_EASYANIMATE,
        cases={
            "t2v": _easyanimate,
            "inpaint": lambda c, g: _easyanimate(c, g, extra="inpaint"),
            "control": lambda c, g: _easyanimate(c, g, extra="control"),
        },
        case_configs={"inpaint": _INPAINT, "control": _CONTROL},
        note="MMDiT and plain blocks; inpaint / control latents concatenated along channels",
    ),
]

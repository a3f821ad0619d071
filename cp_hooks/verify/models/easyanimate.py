"""EasyAnimate (EasyAnimateTransformer3DModel): joint text + video attention (text first), both streams split.

Every block's attention runs over [text, video] (MMDiT blocks project the two streams separately, the later
plain blocks together); the processor concatenates them, applies the rotary table to the tokens after the
(local) text length and splits the result back by that length. So the text and the video are split at the
first block (later blocks get their shards from the block before), and the 3-D rotary table, computed by
`rope_embedding` for the whole video grid, is split with the video tokens. Nothing else mixes tokens: the
patch embedding is a per-frame strided convolution and the inpaint / control latents are concatenated along
channels before it. The text is padded to 256 tokens (no mask reaches the model), so lengths divide.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

EASYANIMATE = {
    "rope_embedding": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_LATENT = 4
# One MMDiT block (separate text projections and text feed-forward) and one plain block.
_EASYANIMATE = dict(num_attention_heads=4, attention_head_dim=16, in_channels=_LATENT, out_channels=_LATENT,
                    patch_size=2, num_layers=2, mmdit_layers=1, time_embed_dim=16, text_embed_dim=32)
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
    ModelEntry("EasyAnimateTransformer3DModel", EASYANIMATE, _EASYANIMATE,
               {"t2v": _easyanimate, "inpaint": lambda c, g: _easyanimate(c, g, extra="inpaint"),
                "control": lambda c, g: _easyanimate(c, g, extra="control")},
               case_configs={"inpaint": _INPAINT, "control": _CONTROL},
               note="MMDiT and plain blocks; inpaint / control latents concatenated along channels"),
]

"""Verification of the longcat_audio family's plans (`cp_hooks.plans.longcat_audio`, where each plan's reasons are):
tiny configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_LONGCAT = dict(dit_dim=32, dit_depth=2, dit_heads=4, dit_text_dim=16, latent_dim=8, ff_mult=2.0)


def _longcat(config, g, length=13, text=7, valid=(7, 4)):
    batch = len(valid)  # a batch of prompts with different text lengths (CFG runs a second, separate call)
    return dict(
        hidden_states=randn(g, batch, length, config["latent_dim"]),
        encoder_hidden_states=randn(g, batch, text, config["dit_text_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid)),
        timestep=torch.full((batch,), 0.4),
        attention_mask=padding_mask(batch, length, [length] * batch),  # the pipeline's duration mask
        latent_cond=torch.zeros(batch, length, config["latent_dim"]),  # text-to-audio: zero latent condition
        return_dict=False,
    )


def _longcat_padded(config, g):
    inputs = _longcat(config, g)
    inputs["attention_mask"] = padding_mask(2, 13, [13, 9])  # audio of different lengths in one batch
    inputs["latent_cond"] = randn(g, 2, 13, config["latent_dim"])
    return inputs


_REDRAW = ("adaln_global_mlp.*", "blocks.*.adaln_mlp.*", "norm_out.*", "proj_out.*")

ENTRIES = [
    ModelEntry(
        "LongCatAudioDiTTransformer",
        config=_LONGCAT,
        cases={"t2a": _longcat, "padded": _longcat_padded},
        anything=True,
        redraw=_REDRAW,
        note="blocks run whole (long skip, shared rotary module): self-attention, cross-attention and "
        "feed-forward split inside each block; padded audio mask; zero-initialised output redrawn",
    ),
]

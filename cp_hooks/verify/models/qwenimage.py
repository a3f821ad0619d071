"""Verification of the qwenimage family's plans (`cp_hooks.plans.qwenimage`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_QWEN = dict(
    patch_size=2,
    in_channels=16,
    out_channels=4,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
)


def _qwen(config, g, text=11, valid=(11, 6), height=4, width=6, references=0):
    batch = len(valid)
    shapes = [(1, height, width)] * (1 + references)
    tokens = height * width * (1 + references)
    return dict(
        hidden_states=randn(g, batch, tokens, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["joint_attention_dim"]),
        encoder_hidden_states_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        timestep=torch.full((batch,), 0.7),
        img_shapes=[shapes] * batch,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "QwenImageTransformer2DModel",
        config=_QWEN,
        cases={"t2i": _qwen, "edit": lambda c, g: _qwen(c, g, references=1)},
        case_configs={"edit": dict(zero_cond_t=True)},
        anything=True,
        note="padded text mask (batch of 2 prompts); Edit-2511 reference image with zero_cond_t",
    ),
]

UNSUPPORTED: dict[str, str] = {}

"""QwenImage (QwenImageTransformer2DModel): joint text + image attention with a padded-text mask.

Both streams are split at the first block, after `forward` has computed the rotary tables for the *full*
text length (the text table depends on it), and the tables are split with their tokens. The text padding
mask reaches every block from `forward` whole, so each block splits its own copy; the processor appends
ones for the local image tokens, giving a key-padding mask in the local joint key order that cp_hooks'
attention carries with its keys. Qwen-Image-Edit-2511's `modulate_index` (which image tokens are the
clean reference) is split with the image tokens. Text lengths follow the prompt: use the anything flags.

Qwen-Image 2.1 (QwenImage21Transformer2DModel) has a family file of its own (`qwenimage21.py`).
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

QWENIMAGE = {
    "transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "transformer_blocks.*": {
        "encoder_hidden_states_mask": ContextParallelInput(split_dim=1, expected_dims=2),
        "modulate_index": ContextParallelInput(split_dim=1, expected_dims=2),
    },
    "pos_embed": {
        0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_QWEN = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
             joint_attention_dim=32, axes_dims_rope=(4, 6, 6))


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
    ModelEntry("QwenImageTransformer2DModel", QWENIMAGE, _QWEN,
               {"t2i": _qwen, "edit": lambda c, g: _qwen(c, g, references=1)},
               case_configs={"edit": dict(zero_cond_t=True)}, anything=True,
               note="padded text mask (batch of 2 prompts); Edit-2511 reference image with zero_cond_t"),
]

UNSUPPORTED = {}

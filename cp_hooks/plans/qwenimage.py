"""QwenImage (QwenImageTransformer2DModel): joint text + image attention with a padded-text mask.

Both streams are split at the first block, after `forward` has computed the rotary tables for the *full*
text length (the text table depends on it), and the tables are split with their tokens. The text padding
mask reaches every block from `forward` whole, so each block splits its own copy; the processor appends
ones for the local image tokens, giving a key-padding mask in the local joint key order that cp_hooks'
attention carries with its keys. Qwen-Image-Edit-2511's `modulate_index` (which image tokens are the
clean reference) is split with the image tokens. Text lengths follow the prompt: use the anything flags.

Qwen-Image 2.1 (QwenImage21Transformer2DModel) has a family file of its own (`qwenimage21.py`).
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

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


PLANS = {
    "QwenImageTransformer2DModel": PlanDeclaration(plan=QWENIMAGE),
}

"""HunyuanImage 2.1 (HunyuanImageTransformer2DModel): joint image + text attention, both streams split.

The image tokens are split at the patch embedding and the rotary table (cos, sin; one row per image token,
computed by `rope` for the whole grid) with them. The text is split where it enters:

- The MLLM text goes through the token refiner (`context_embedder`), which needs all of it: it pools over
  its padding mask and runs self-attention with a query x key mask (plain SDPA through diffusers'
  dispatch, marked local). So the refiner gets the whole text, its output is split, and its padding mask,
  split at the model's input, is gathered back for it (HunyuanVideo's arrangement).
- The ByT5 glyph text (a per-token projection) and its mask are split at the model's input.

`forward` then reorders each sample's text as [valid ByT5, valid MLLM, invalid ByT5, invalid MLLM] with
the matching mask, and pads the mask on the left with True for `hidden_states.shape[1]` image tokens. On a
rank both happen on its shards: the local mask is exactly the mask of the local [image, text] keys, and
every text token lands on exactly one rank, in another order than alone. That is harmless: the text has
no rotary positions, attention sums over keys in any order, and the text stream is dropped after the
last block (only the image tokens are gathered, at `proj_out`). Every text shard of a batch has the same
length, so the per-sample reordering still stacks.

The refiner pipeline passes 5-D latents ([noisy, condition] along channels, one extra leading frame) to a
config with 3-D patches and rotary axes; the plan is the same.
"""

from __future__ import annotations

from cp_hooks.plans.hunyuan_video import HUNYUAN_VIDEO
from cp_hooks.plans.specs import ContextParallelInput, PlanDeclaration

_MASK = ContextParallelInput(split_dim=1, expected_dims=2)

# HunyuanVideo's plan (the token refiner, the image tokens, the rotary table, proj_out), with the ByT5 text and
# both masks split at the model's input.
HUNYUAN_IMAGE = {
    **HUNYUAN_VIDEO,
    "": {
        "encoder_attention_mask": _MASK,
        "encoder_hidden_states_2": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_attention_mask_2": _MASK,
    },
}


PLANS = {
    "HunyuanImageTransformer2DModel": PlanDeclaration(plan=HUNYUAN_IMAGE),
}

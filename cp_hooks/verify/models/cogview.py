"""CogView 3 Plus and CogView 4: joint text + image attention (text first), both streams split.

CogView3Plus: `patch_embed` returns [text, image] in one tensor (sincos positions added to the image) and
`forward` slices it apart by the full text length, so both streams are split at the first block. Its
CogVideoX processor concatenates [local text, local image] and splits the result by the local text length,
and the block's feed-forward does the same: consistent on every rank. No rotary table, no mask.

CogView4: `patch_embed` returns the image and text streams separately, so both of its outputs are split;
the 2-D rotary table (cos, sin), one row per image token, is computed by `rope` for the whole grid and
split like the image. The processor concatenates [local text, local image] and rotates the rows after the
local text length with the local table: aligned. The pipelines pad the GLM text (on the left) to a multiple
of 16 tokens and pass no mask; the optional `attention_mask` argument builds a (B, 1, S, S) query x key
float mask, which cp_hooks refuses with an error. CogView4-Control concatenates the control latents along
channels (twice the input channels), which changes nothing for the plan.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

COGVIEW3PLUS = {
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

COGVIEW4 = {
    "patch_embed": {
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
        1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "rope": {0: _ROPE, 1: _ROPE},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_COMMON = dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
               text_embed_dim=16, time_embed_dim=16, condition_dim=8, pos_embed_max_size=16, sample_size=8)
_COGVIEW3PLUS = _COMMON
_COGVIEW4 = dict(_COMMON, rope_axes_dim=(16, 16))


def _cogview(config, g, text=16, height=8, width=12):
    # CFG batch (CogView3Plus) or one call per branch (CogView4); SDXL-style size conditions per sample.
    batch = 2
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        timestep=torch.full((batch,), 800.0),
        original_size=torch.tensor([[height * 8.0, width * 8.0]] * batch),
        target_size=torch.tensor([[height * 8.0, width * 8.0]] * batch),
        crop_coords=torch.zeros(batch, 2),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("CogView3PlusTransformer2DModel", COGVIEW3PLUS, _COGVIEW3PLUS, {"t2i": _cogview},
               note="[text, image] from one patch embedding, split at the first block"),
    ModelEntry("CogView4Transformer2DModel", COGVIEW4, _COGVIEW4,
               {"t2i": _cogview, "control": _cogview}, case_configs={"control": dict(in_channels=8)},
               note="2-D rotary table split with the image; Control: latents concatenated along channels; not the "
                    "optional attention_mask (a query x key mask, refused)"),
]

"""Verification of the hunyuan_dit family's plans (`cp_hooks.plans.hunyuan_dit`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch
from diffusers.models.embeddings import get_2d_rotary_pos_embed

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

# 4 blocks: the smallest depth with a long skip (block 0 -> block 3).
_HUNYUAN_DIT = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    patch_size=2,
    sample_size=8,
    hidden_size=32,
    num_layers=4,
    cross_attention_dim=16,
    cross_attention_dim_t5=16,
    pooled_projection_dim=16,
    text_len=6,
    text_len_t5=10,
)


def _hunyuan_dit(config, g, height=8, width=12):
    # CFG batch [negative, positive]: Bert and T5 text padded to their fixed lengths, with masks.
    p = config["patch_size"]
    grid = (height // p, width // p)
    cos, sin = get_2d_rotary_pos_embed(config["attention_head_dim"], ((0, 0), grid), grid, output_type="pt")
    inputs = dict(
        hidden_states=randn(g, 2, config["in_channels"], height, width),
        timestep=torch.full((2,), 900.0),
        encoder_hidden_states=randn(g, 2, config["text_len"], config["cross_attention_dim"]),
        text_embedding_mask=padding_mask(2, config["text_len"], [2, 5], dtype=torch.long),
        encoder_hidden_states_t5=randn(g, 2, config["text_len_t5"], config["cross_attention_dim_t5"]),
        text_embedding_mask_t5=padding_mask(2, config["text_len_t5"], [1, 7], dtype=torch.long),
        image_rotary_emb=(cos.float(), sin.float()),
        return_dict=False,
    )
    if config["use_style_cond_and_image_meta_size"]:  # v1.1 and earlier: size and style conditions
        inputs["image_meta_size"] = torch.tensor([[height * 8.0, width * 8.0, height * 8.0, width * 8.0, 0, 0]] * 2)
        inputs["style"] = torch.tensor([0, 0])
    return inputs


ENTRIES = [
    ModelEntry(
        "HunyuanDiT2DModel",
        config=_HUNYUAN_DIT,
        cases={"v1.1": _hunyuan_dit, "v1.2": _hunyuan_dit},
        case_configs={"v1.2": dict(use_style_cond_and_image_meta_size=False)},
        note="text cross-attention and the T5 attention pooler local; long skips; not ControlNet residuals",
    ),
]

"""Hunyuan-DiT (HunyuanDiT2DModel): image self-attention split; the text cross-attention runs locally.

`pos_embed` only patchifies (no absolute positions), so its output is split; the 2-D rotary table (cos,
sin), one row per image token, is computed by the pipeline for the whole grid and split like the image.
The long skip connections (block i's output added into block num_layers - 1 - i) join shards of the same
tokens, so they need nothing. The text (CLIP/Bert tokens then T5 tokens; padded positions replaced by a
learned padding embedding, so the text masks never reach attention) stays whole on every rank: the
cross-attention `attn2` calls SDPA directly and is marked local, its queries rotated with the local table.
The T5 attention pooler of `time_extra_emb` pools the whole text with `F.multi_head_attention_forward`,
which calls SDPA inside; today's SDPA router sees only the outer call and leaves it alone, but it is marked
local too, so that no router that sees the inner call can take it for sequence-parallel attention.
The image is gathered at `proj_out`, before the unpatchify.

Not covered: ControlNet residuals (`controlnet_block_samples`, a list of full-length tensors added to the
skips), which the plan does not split.
"""

import torch
from diffusers.models.embeddings import get_2d_rotary_pos_embed

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

HUNYUAN_DIT = {
    "": {"image_rotary_emb": [_ROPE, _ROPE]},
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "time_extra_emb.pooler": LocalAttention(),
    "blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


# 4 blocks: the smallest depth with a long skip (block 0 -> block 3).
_HUNYUAN_DIT = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8,
                    hidden_size=32, num_layers=4, cross_attention_dim=16, cross_attention_dim_t5=16,
                    pooled_projection_dim=16, text_len=6, text_len_t5=10)


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
    ModelEntry("HunyuanDiT2DModel", HUNYUAN_DIT, _HUNYUAN_DIT, {"v1.1": _hunyuan_dit, "v1.2": _hunyuan_dit},
               case_configs={"v1.2": dict(use_style_cond_and_image_meta_size=False)},
               note="text cross-attention and the T5 attention pooler local; long skips; not ControlNet residuals"),
]

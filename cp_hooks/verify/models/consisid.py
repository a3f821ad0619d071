"""Verification of the consisid family's plans (`cp_hooks.plans.consisid`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LATENT = 4
_HEAD_DIM = 16  # the rotary table splits it 4 (time) + 6 (height) + 6 (width)
_INNER = 4 * _HEAD_DIM
_CONSISID = dict(
    num_attention_heads=4,
    attention_head_dim=_HEAD_DIM,
    in_channels=2 * _LATENT,
    out_channels=_LATENT,
    time_embed_dim=16,
    text_embed_dim=16,
    num_layers=2,
    patch_size=2,
    use_rotary_positional_embeddings=True,
    is_train_face=True,
    cross_attn_interval=2,
    cross_attn_dim_head=8,
    cross_attn_num_heads=2,
    LFE_id_dim=12,
    LFE_vit_dim=16,
    LFE_depth=2,
    LFE_dim_head=8,
    LFE_num_heads=2,
    LFE_num_id_token=2,
    LFE_num_querie=4,
    LFE_output_dim=int(_INNER / 3 * 2),
    LFE_ff_mult=1,
    LFE_num_scale=2,
)


def _consisid(config, g, text=13, frames=2, height=8, width=12):
    batch = 2  # classifier-free guidance batch; the face embeddings stay batch 1 as in the pipeline
    tokens = frames * (height // 2) * (width // 2)
    angles = randn(g, tokens, config["attention_head_dim"])
    return dict(
        # [noisy latents, image latents (first frame, zeros after)] along channels, (B, F, C, H, W)
        hidden_states=randn(g, batch, frames, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        timestep=torch.tensor([500, 500]),
        image_rotary_emb=(angles.cos(), angles.sin()),
        id_cond=randn(g, 1, config["LFE_id_dim"]),
        id_vit_hidden=[randn(g, 1, 5, config["LFE_vit_dim"]) for _ in range(config["LFE_num_scale"])],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "ConsisIDTransformer3DModel",
        config=_CONSISID,
        cases={"i2v": _consisid},
        anything=True,
        note="video split; the text is split only inside each attention (forward drops it by its whole "
        "length); face identity modules (local cross-attention to replicated face tokens)",
    ),
]

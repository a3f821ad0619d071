"""Tiny random diffusers transformers and inputs shaped as their pipelines shape them (nothing downloaded)."""

from __future__ import annotations

import torch


def tiny_flux(seed: int = 0, text_len: int = 8, height: int = 8, width: int = 8, batch: int = 1, heads: int = 4):
    """A 1+1-layer FluxTransformer2DModel and inputs with `height * width` image tokens."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=heads, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    g = torch.Generator().manual_seed(seed + 1)
    img_ids = torch.zeros(height, width, 3)
    img_ids[..., 1] = torch.arange(height)[:, None]
    img_ids[..., 2] = torch.arange(width)[None, :]
    inputs = dict(
        hidden_states=torch.randn(batch, height * width, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, 32, generator=g),
        pooled_projections=torch.randn(batch, 32, generator=g),
        timestep=torch.full((batch,), 0.5),
        guidance=torch.full((batch,), 3.5),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text_len, 3),
        return_dict=False,
    )
    return model, inputs


def tiny_wan(seed: int = 0, text_len: int = 8, frames: int = 2, height: int = 8, width: int = 8, batch: int = 1,
             image_len: int = 0, heads: int = 4):
    """A 2-layer WanTransformer3DModel (text cross-attention; I2V image context when image_len > 0)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32,
        image_dim=32 if image_len else None, added_kv_proj_dim=32 if image_len else None,
    ).eval()
    g = torch.Generator().manual_seed(seed + 1)
    inputs = dict(
        hidden_states=torch.randn(batch, 4, frames, height, width, generator=g),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, text_len, 32, generator=g),
        return_dict=False,
    )
    if image_len:
        inputs["encoder_hidden_states_image"] = torch.randn(batch, image_len, 32, generator=g)
    return model, inputs

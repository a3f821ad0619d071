"""Kandinsky 6 SR's one-process reference: the block selection of cp_hooks.plans.kandinsky is diffusers' own."""

import torch
import torch.nn.functional as F

from cp_hooks.plans import kandinsky as K


def test_block_selection_matches_diffusers_block_mask():
    from diffusers.models.transformers.transformer_kandinsky6_sr import nabla_block_mask, sliding_tile_mask

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 768, 2, 16, generator=g) for _ in range(2))  # (B, S, H, D), 12 tiles
    sta = sliding_tile_mask(3, 2, 2, (1, 3, 3), "cpu")
    block_mask = nabla_block_mask(q.transpose(1, 2), k.transpose(1, 2), sta, thr=0.8)
    blocks = K._nabla_blocks(K._tile_means(q), K._tile_means(k), sta, 0.8)
    assert torch.equal(block_mask.to_dense().bool(), blocks)
    assert (~blocks).any() and not (~blocks & sta).any()  # some blocks masked; the prior always kept


def test_uncompiled_flex_ignores_the_block_mask():
    """Why the entry's reference is an SDPA twin: eager flex with mask_mod=None attends to every key."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
    from diffusers.models.transformers.transformer_kandinsky6_sr import nabla_block_mask, sliding_tile_mask

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 768, 2, 16, generator=g) for _ in range(3))
    sta = sliding_tile_mask(3, 2, 2, (1, 3, 3), "cpu")
    with torch.no_grad():
        mask = nabla_block_mask(q.transpose(1, 2), k.transpose(1, 2), sta, 0.8)
        flex = dispatch_attention_fn(q, k, v, attn_mask=mask, backend=AttentionBackendName.FLEX)
    dense = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(flex, dense, atol=1e-5)

"""Cosmos predict (CosmosTransformer3DModel, Cosmos 1.0 / 2.0 / 2.5): video self-attention split; text
cross-attention local. Cosmos 3 Omni is not served (see UNSUPPORTED).

The video tokens are split at the first block. `forward` computes everything with one row per token for the
whole grid and hands it to every block, so every block splits its own copy: the rotary table (`rope`'s
output, split once), Cosmos 1.0's learnable positional embedding (`extra_pos_emb`), the per-frame
timestep's modulation and Cosmos Transfer's control residuals. Cosmos 2.0 / 2.5 video2world pass one
timestep per latent frame, (B, 1, T, 1, 1); `forward` expands its two embeddings to (B, S, C), split with
the tokens in every block and in `norm_out`; the usual (B,) timestep gives (B, C) embeddings, left whole
(skip_other_dims). The text (and Transfer 2.5's image context) stays whole on every rank: Cosmos's processors
call `dispatch_attention_fn` without a parallel config and cp_hooks routes their SDPA, so the
cross-attention (`attn2`) is marked LocalAttention().

The condition and padding masks are concatenated along channels (per-pixel, local to each token). The tiny
configs leave `concat_padding_mask` off because it needs torchvision (a resize), which the catalogue's
environment does not require; the channel it adds does not touch the split.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_PER_TOKEN = ContextParallelInput(split_dim=1, expected_dims=3, skip_other_dims=True)  # (B, S, C) or (B, C)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

COSMOS = {
    "rope": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    "transformer_blocks.*": {
        "embedded_timestep": _PER_TOKEN,
        "temb": _PER_TOKEN,
        "extra_pos_emb": _TOKENS,
        "controlnet_residual": _TOKENS,
    },
    "transformer_blocks.*.attn2": LocalAttention(),
    "norm_out": {"embedded_timestep": _PER_TOKEN, "temb": _PER_TOKEN},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "CosmosTransformer3DModel": PlanDeclaration(plan=COSMOS),
}

"""Latte (LatteTransformer3DModel): factorised attention, split inside every block (as Helios does).

Latte alternates spatial blocks, whose batch is (B * frames) and whose sequence is one frame's patches, and
temporal blocks, whose batch is (B * patches) and whose sequence is the frames of one patch. `forward`
reshapes between the two layouts with the whole batch size, and hands the temporal blocks a timestep
embedding repeated for every patch of the whole frame, (B * patches, 6 * D). A shard of either layout does
not survive the reshape into the other (the rows of a split batch-major layout are not a contiguous piece of
the other one), so the blocks themselves run whole; what is split is the work inside them:

- the self-attention of both block types (spatial: a frame's patches; temporal: the frames), its input
  split along the sequence and its output gathered after `to_out`;
- the spatial blocks' text cross-attention: its queries are split at `to_q` and gathered after `to_out`;
  the text is replicated and its processor calls SDPA directly, so the module is marked LocalAttention();
- the feed-forward of both block types, split at its input and gathered after its last linear layer.

The modulation, norms and residuals run whole on every rank. The positional embeddings are added in `forward`
(`pos_embed` for the patches, `temp_pos_embed` before the first temporal block), before any split.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)


def _inside(blocks: str, cross: bool) -> dict:
    plan = {
        f"{blocks}.*.attn1": {"hidden_states": _TOKENS},
        f"{blocks}.*.attn1.to_out.1": _GATHER,
        f"{blocks}.*.ff": {"hidden_states": _TOKENS},
        f"{blocks}.*.ff.net.2": _GATHER,
    }
    if cross:
        plan.update(
            {
                f"{blocks}.*.attn2": LocalAttention(),
                f"{blocks}.*.attn2.to_q": {"input": _TOKENS},
                f"{blocks}.*.attn2.to_out.1": _GATHER,
            }
        )
    return plan


LATTE = {**_inside("transformer_blocks", cross=True), **_inside("temporal_transformer_blocks", cross=False)}


PLANS = {
    "LatteTransformer3DModel": PlanDeclaration(plan=LATTE),
}

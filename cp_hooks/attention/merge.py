"""Merging partial attention results computed over disjoint key blocks.

For one query and two key blocks with outputs o_a, o_b and log-sum-exps l_a, l_b, the exact result over
both blocks is the softmax-weighted mix  o = (e^{l_a} o_a + e^{l_b} o_b) / (e^{l_a} + e^{l_b})  and
l = log(e^{l_a} + e^{l_b}). Written with sigmoid so that nothing overflows:
    o = o_a - sigmoid(l_b - l_a) * (o_a - o_b)
    l = l_a - logsigmoid(l_a - l_b)          (== logaddexp(l_a, l_b))
A block whose keys are all masked has l = -inf and o = 0; the weight of -inf against -inf is taken as 0,
so merging such a block changes nothing.
"""

from __future__ import annotations

import torch


def merge_partial_(out: torch.Tensor, lse: torch.Tensor, block_out: torch.Tensor, block_lse: torch.Tensor):
    """Merge one block into the running (out, lse) in place; returns (out, new lse).

    Shapes: out (B, S, H, D), lse (B, H, S). `out` stays in the dtype it has (float32 when the caller
    converts, the input dtype otherwise); lse is float32.
    `out - w * (out - o_b)` is `lerp(out, o_b, w)`; `lerp_` computes it element by element in place, so a
    ring step needs no full-size temporaries beyond the block's own output. Not for autograd (ring attention
    merges inside its autograd.Function forward). `out` must not alias `block_out`.
    """
    weight = torch.sigmoid(block_lse - lse).nan_to_num_(0.0)  # (B, H, S); nan only for -inf vs -inf
    weight = weight.transpose(1, 2).unsqueeze(-1).to(out.dtype)  # -> (B, S, H, 1)
    out.lerp_(block_out.to(out.dtype), weight)
    return out, torch.logaddexp(lse, block_lse)

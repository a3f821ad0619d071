"""Group normalisation over a slab: statistics of the whole image, reduced over the ranks.

`nn.GroupNorm` normalises each (sample, group) over channels-in-group x all positions; a rank holds only its
rows of those positions. Each rank computes, in fp32 per (sample, group), its count n_r, mean m_r and sum
of squared deviations M2_r (`var_mean`: no temporary of the slab's size); one all-gather of these three
numbers (the whole-image statistics need every rank's) and Chan's parallel merge give
`mean = sum n_r m_r / N`, `M2 = sum M2_r + sum n_r (m_r - mean)^2`,
`var = M2 / N` (biased, as GroupNorm) — exact for uneven slabs (counts are per rank) and free of the
cancellation of a sum / sum-of-squares reduction. The merge runs in float64 on 3·B·G numbers, and the
normalisation with the affine is one fused `x * scale + shift` per (sample, channel).

Norms that normalise each position over channels only (Wan's and QwenImage's RMS norms, LTX's RMSNorm,
BatchNorm in eval mode) are local and left alone.
"""

from __future__ import annotations

import torch
from torch import nn

from cp_hooks import comm
from cp_hooks.vae import slab

NORM_PAYLOAD = "vae_norm"


def make_group_norm_forward(module: nn.GroupNorm, inner):
    """A forward for `module` that normalises with statistics reduced over the slab layout's ranks.

    Args:
        module: the GroupNorm.
        inner: its previous forward (used outside a parallel call).

    Returns:
        The replacement forward.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        layout = slab.current()
        if layout is None:
            return inner(x)
        batch, channels = x.shape[:2]
        groups = module.num_groups
        xf = x.reshape(batch, groups, -1)
        count = xf.shape[-1]
        var, mean = torch.var_mean(xf.float() if x.dtype != torch.float32 else xf, dim=-1, unbiased=False)
        local = torch.stack([torch.full_like(mean, count), mean, var * count]).double()  # (3, B, G): n, mean, M2
        # Every rank needs every other rank's (n, mean, M2): one all-gather of 3·B·G numbers.
        stats = comm.all_gather(local.unsqueeze(0), None, layout.group, dim=0, payload=NORM_PAYLOAD)
        n, means, m2s = stats[:, 0], stats[:, 1], stats[:, 2]  # (world, B, G)
        total = n.sum(0)
        global_mean = (n * means).sum(0) / total
        global_m2 = m2s.sum(0) + (n * (means - global_mean).square()).sum(0)
        rstd = torch.rsqrt(global_m2 / total + module.eps)  # (B, G), float64
        # y = (x - mean) * rstd * weight + bias = x * scale + shift, per (sample, channel): one fused pass over
        # the slab and no temporary of its size.
        per_channel = channels // groups
        scale = rstd.repeat_interleave(per_channel, dim=1)
        shift = -(global_mean.repeat_interleave(per_channel, dim=1)) * scale
        if module.affine:
            scale = scale * module.weight.double()
            shift = shift * module.weight.double() + module.bias.double()
        shape = (batch, channels) + (1,) * (x.ndim - 2)
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        y = torch.addcmul(shift.to(compute).reshape(shape), x.to(compute), scale.to(compute).reshape(shape))
        return y.to(x.dtype)

    forward.__name__ = "forward"
    forward.__qualname__ = "cp_hooks.vae.norm.group_norm_forward"
    return forward


def find_group_norms(root: nn.Module) -> list[nn.GroupNorm]:
    """Every `nn.GroupNorm` under `root`."""
    return [m for m in root.modules() if isinstance(m, nn.GroupNorm)]


__all__ = ["make_group_norm_forward", "find_group_norms", "NORM_PAYLOAD"]

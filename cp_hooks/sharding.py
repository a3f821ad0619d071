"""Split a tensor into this rank's shard and gather shards back, even or uneven, autograd-correct.

Rank r of a group of N holds piece r of `tensor.tensor_split(N, dim)`: equal pieces when N divides the
length, otherwise the first `length % N` ranks hold one more element. Gather is the exact inverse.

Gradient convention (training): every rank computes the same loss from the full, gathered output, and
each rank back-propagates only the part of it that flows through its own tokens. So the backward of a
gather keeps this rank's slice, and the backward of a split places the shard's gradient at its offset in a
zero tensor: every gradient upstream of a split, like every parameter gradient, is this rank's *partial*
sum, and summing over the context-parallel group (`reduce_gradients`) gives the single-process gradient.
(An all-gather here would make the gradients of layers before the split complete on every rank, and the
sum would count them N times.)
"""

from __future__ import annotations

import torch

from . import comm


def shard_sizes(length: int, world: int) -> list[int]:
    """Lengths of the `world` pieces of `tensor_split` over `length` elements."""
    base, extra = divmod(length, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def take_shard(x: torch.Tensor, dim: int, rank: int, world: int) -> torch.Tensor:
    """This rank's piece of `x` along `dim`, without communication or autograd wrapping."""
    return x.tensor_split(world, dim=dim)[rank]


class _Split(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, rank, world):
        sizes = shard_sizes(x.shape[dim], world)
        ctx.args = (dim, sum(sizes[:rank]), tuple(x.shape))
        return take_shard(x, dim, rank, world)

    @staticmethod
    def backward(ctx, grad):
        dim, start, shape = ctx.args
        full = grad.new_zeros(shape)
        full.narrow(dim, start, grad.shape[dim]).copy_(grad)
        return full, None, None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group, sizes, rank):
        ctx.args = (dim, sum(sizes[:rank]), sizes[rank])
        return comm.all_gather(x, sizes, group, dim)

    @staticmethod
    def backward(ctx, grad):
        dim, start, length = ctx.args
        return grad.narrow(dim, start, length), None, None, None, None


def split_tensor(x: torch.Tensor, dim: int, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of the replicated tensor `x` along `dim` (backward: the shard's partial gradient)."""
    return _Split.apply(x, dim, rank, world)


def gather_tensor(x: torch.Tensor, dim: int, group, rank: int, world: int, uneven: bool) -> torch.Tensor:
    """Concatenate every rank's shard along `dim` (backward: keep this rank's slice).

    With `uneven` the per-rank lengths are exchanged first (one tiny all-gather, every call: never cached).
    Otherwise every shard must have this rank's length.
    """
    dim = dim % x.dim()
    if uneven:
        sizes = [row[0] for row in comm.exchange_sizes([x.shape[dim]], group, x.device)]
    else:
        sizes = [x.shape[dim]] * world
    return _Gather.apply(x, dim, group, sizes, rank)

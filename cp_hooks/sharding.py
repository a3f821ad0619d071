"""Split a tensor into this rank's shard and gather shards back, even or uneven, autograd-correct.

Rank r of a group of N holds piece r of `tensor.tensor_split(N, dim)`: equal pieces when N divides the
length, otherwise the first `length % N` ranks hold one more element. Gather is the exact inverse.

Gradient convention (training): the full tensor before a split is replicated, and every rank computes the
same loss from the full, gathered output. So the backward of a split all-gathers the shard gradients (each
rank then holds the gradient of the replicated tensor) and the backward of a gather keeps this rank's slice.
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
    def forward(ctx, x, dim, group, rank, world):
        ctx.args = (dim, group, shard_sizes(x.shape[dim], world))
        return take_shard(x, dim, rank, world)

    @staticmethod
    def backward(ctx, grad):
        dim, group, sizes = ctx.args
        return comm.all_gather(grad, sizes, group, dim), None, None, None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group, sizes, rank):
        ctx.args = (dim, sum(sizes[:rank]), sizes[rank])
        return comm.all_gather(x, sizes, group, dim)

    @staticmethod
    def backward(ctx, grad):
        dim, start, length = ctx.args
        return grad.narrow(dim, start, length), None, None, None, None


def split_tensor(x: torch.Tensor, dim: int, group, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of the replicated tensor `x` along `dim` (backward: all-gather)."""
    return _Split.apply(x, dim, group, rank, world)


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

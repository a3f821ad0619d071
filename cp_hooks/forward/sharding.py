"""Split a tensor into this rank's shard and gather shards back, even or uneven, autograd-correct.

Rank r of a group of N holds piece r of `tensor.tensor_split(N, dim)`: equal pieces when N divides the
length, otherwise the first `length % N` ranks hold one more element. Gather is the exact inverse.

Gradient convention (training; docs/architecture.md, "Gradients"): every rank computes the same loss from
the full, gathered output, and each rank back-propagates the part of it that flows through its own tokens.
  * split: the shard's gradient is placed at its offset in a zero tensor, so everything upstream of a
    split holds this rank's *partial* gradient (an all-gather here would make it complete on every rank,
    and summing over the group would count it N times);
  * gather: downstream of a gather the gradients may be partial per rank (a module whose input is gathered
    mid-model, whose output is split again), so the backward *sums* them over the group and keeps this
    rank's piece (a reduce-scatter);
  * the model's output: `ReplicatedOutputHook` divides its gradient by N, because N ranks back-propagate
    the same loss. Layers after the final gather (which run replicated) then hold 1/N of their gradient on
    each rank, and the reduce-scatter of N equal 1/N gradients is exactly this rank's slice.
Summing every parameter gradient over the context-parallel group (`reduce_gradients`) then gives the
single-process gradient, wherever the parameter acts.
"""

from __future__ import annotations

import torch

from cp_hooks import comm
from cp_hooks.forward.lengths import shard_sizes


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


# The gather and its backward are registered operators: torch.compile traces a plan's gathers as opaque
# calls, whatever transport runs inside (docs/architecture.md, "Compile boundary").
@torch.library.custom_op("cp_hooks::all_gather", mutates_args=())
def _all_gather_op(x: torch.Tensor, dim: int, group_key: int, sizes: list[int]) -> torch.Tensor:
    return comm.all_gather(x, sizes, comm.group_by_key(group_key), dim).contiguous()


@_all_gather_op.register_fake
def _(x, dim, group_key, sizes):
    shape = list(x.shape)
    shape[dim] = sum(sizes)
    return x.new_empty(shape)


@torch.library.custom_op("cp_hooks::reduce_scatter", mutates_args=())
def _reduce_scatter_op(x: torch.Tensor, dim: int, group_key: int, sizes: list[int]) -> torch.Tensor:
    return comm.reduce_scatter(x, sizes, comm.group_by_key(group_key), dim).contiguous()


@_reduce_scatter_op.register_fake
def _(x, dim, group_key, sizes):
    shape = list(x.shape)
    shape[dim] = sizes[comm.group_by_key(group_key).rank()]
    return x.new_empty(shape)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group_key, sizes):
        ctx.args = (dim, group_key, sizes)
        return torch.ops.cp_hooks.all_gather(x, dim, group_key, sizes)

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.cp_hooks.reduce_scatter(grad.contiguous(), *ctx.args), None, None, None


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def split_tensor(x: torch.Tensor, dim: int, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of the replicated tensor `x` along `dim` (backward: the shard's partial gradient)."""
    return _Split.apply(x, dim, rank, world)


def share_replicated_gradient(x: torch.Tensor, world: int) -> torch.Tensor:
    """`x` unchanged; its gradient divided by `world` (for a result every rank computes identically)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _ScaleGradient.apply(x, 1.0 / world)


def gather_tensor(
    x: torch.Tensor,
    dim: int,
    group,
    world: int,
    uneven: bool,
    sizes: list[int] | None = None,
    group_key: int | None = None,
) -> torch.Tensor:
    """Concatenate every rank's shard along `dim` (backward: sum the gradients, keep this rank's piece).

    `group_key` is `comm.group_key(group)` computed ahead (traced code must not register groups).
    `sizes` are the ranks' lengths along `dim` when the caller knows them (the plan's gathers always do:
    `cp_hooks.lengths`, `cp_hooks.length_memo`). Otherwise, with `uneven`, they are exchanged first (one tiny
    all-gather; not possible inside a compiled graph, where a shape cannot come from a collective), and without
    it every shard has this rank's length.
    """
    dim = dim % x.dim()
    if sizes is None:
        if not uneven:
            sizes = [x.shape[dim]] * world
        else:
            if torch.compiler.is_compiling():
                raise RuntimeError(
                    "A gather of uneven shards inside torch.compile needs every rank's length from the plan's splits, "
                    "and this length does not match them unambiguously. Compile the repeated blocks instead "
                    "(model.compile_repeated_blocks), or use lengths that the degree divides."
                )
            sizes = [row[0] for row in comm.exchange_sizes([x.shape[dim]], group, x.device)]
    return _Gather.apply(x, dim, comm.group_key(group) if group_key is None else group_key, list(sizes))

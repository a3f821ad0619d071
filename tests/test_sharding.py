"""Split / gather round trips, even and uneven, forward and backward, on 2, 3 and 4 gloo ranks."""

import pytest
import torch
import torch.distributed as dist

from cp_hooks.forward.sharding import gather_tensor, shard_sizes, share_replicated_gradient, split_tensor
from cp_testing import make_config


def test_shard_sizes():
    assert shard_sizes(10, 4) == [3, 3, 2, 2]
    assert shard_sizes(8, 4) == [2, 2, 2, 2]
    assert sum(shard_sizes(769, 3)) == 769


def round_trip(lengths, dims):
    world, rank = dist.get_world_size(), dist.get_rank()
    group = dist.group.WORLD
    for length in lengths:
        for dim in dims:
            shape = [2, 3, 4]
            shape[dim] = length
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(length)).requires_grad_()
            local = split_tensor(x, dim, rank, world)
            assert torch.equal(local, x.tensor_split(world, dim)[rank])
            full = gather_tensor(local, dim, group, world, uneven=length % world != 0)
            assert torch.equal(full, x)
            # Backward: the loss is the same on every rank, so each rank takes 1/N of the gathered output's
            # gradient (as enable_parallelism's output hook does); the gather's backward sums those over the
            # ranks, and each rank's input gradient is its partial sum: the sum over ranks is the
            # single-process gradient.
            full = share_replicated_gradient(full, world)
            weight = torch.randn(*shape, generator=torch.Generator().manual_seed(99))
            (full * weight).sum().backward()
            grad = x.grad.clone()
            dist.all_reduce(grad)
            assert torch.allclose(grad, weight), f"length {length} dim {dim}"
    return True


@pytest.mark.parametrize("world", [2, 3, 4])
def test_round_trip(pool, world):
    lengths = [world, 2 * world, 2 * world + 1, 7, 13, world + 1]
    pool(world).run(round_trip, lengths, [0, 1, 2])


def even_gather_default():
    make_config(ulysses=dist.get_world_size())
    x = torch.arange(6.0).view(1, 6) + 10 * dist.get_rank()
    out = gather_tensor(x, -1, dist.group.WORLD, dist.get_world_size(), uneven=False)
    return out.tolist()


def test_negative_dim_gather(pool):
    results = pool(2).run(even_gather_default)
    assert results[0] == results[1] == [[0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]]


def gather_backward_sums_partial_gradients():
    """A gather whose downstream gradient differs per rank (a mid-model gather that is split again)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    x = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(5)).requires_grad_()
    weight = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(6))
    full = gather_tensor(split_tensor(x, 1, rank, world), 1, dist.group.WORLD, world, uneven=True)
    # A token-mixing layer on the whole sequence, split again: rank r's loss depends on every earlier token,
    # so its gradient of the gathered tensor reaches other ranks' tokens, and only the sum over ranks is whole.
    again = split_tensor(full.cumsum(1), 1, rank, world)
    (again * split_tensor(weight, 1, rank, world)).sum().backward()
    grad = x.grad.clone()
    dist.all_reduce(grad)
    expected = weight.flip(1).cumsum(1).flip(1)  # d/dx_i of sum_j w_j * cumsum(x)_j = sum_{j >= i} w_j
    assert torch.allclose(grad, expected, atol=1e-6), "the gather's backward must sum the partial gradients"
    return True


@pytest.mark.parametrize("world", [2, 3])
def test_gather_backward_sums_partial_gradients(pool, world):
    pool(world).run(gather_backward_sums_partial_gradients)

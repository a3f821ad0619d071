"""Split / gather round trips, even and uneven, forward and backward, on 2, 3 and 4 gloo ranks."""

import pytest
import torch
import torch.distributed as dist

from cp_hooks.sharding import gather_tensor, shard_sizes, split_tensor
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
            full = gather_tensor(local, dim, group, rank, world, uneven=length % world != 0)
            assert torch.equal(full, x)
            # Backward: the loss is the same on every rank; each rank's input gradient is its partial sum,
            # so the sum over ranks is the single-process gradient.
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
    out = gather_tensor(x, -1, dist.group.WORLD, dist.get_rank(), dist.get_world_size(), uneven=False)
    return out.tolist()


def test_negative_dim_gather(pool):
    results = pool(2).run(even_gather_default)
    assert results[0] == results[1] == [[0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]]

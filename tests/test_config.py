"""ContextParallelConfig validation (single process) and setup against the world size (gloo ranks)."""

import pytest
import torch.distributed as dist

from cp_hooks import ContextParallelConfig


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "nothing to parallelize"),
        ({"ring_degree": 1, "ulysses_degree": 1}, "nothing to parallelize"),
        ({"ring_degree": 0, "ulysses_degree": 2}, "must be >= 1"),
        ({"ulysses_degree": -2}, "must be >= 1"),
        ({"ulysses_degree": 2, "rotate_method": "p2p"}, "Unknown `rotate_method`"),
        ({"ring_degree": 2, "ulysses_anything": True}, "needs `ulysses_degree > 1`"),
        ({"ulysses_degree": 2, "ring_anything": True}, "needs `ring_degree > 1`"),
    ],
)
def test_invalid_configs_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContextParallelConfig(**kwargs)


def test_degree_type_checked():
    with pytest.raises(TypeError, match="must be an int"):
        ContextParallelConfig(ulysses_degree=2.0)


def test_defaults_match_diffusers_fields():
    config = ContextParallelConfig(ring_degree=2)
    assert (config.ring_degree, config.ulysses_degree, config.convert_to_fp32, config.rotate_method) == (2, 1, True, "allgather")
    assert (config.ulysses_anything, config.ring_anything, config.mesh) == (False, False, None)
    assert config.world_size == 2 and not config.is_setup


def test_anything_modes_combine_in_hybrid():
    config = ContextParallelConfig(ring_degree=2, ulysses_degree=2, ulysses_anything=True, ring_anything=True)
    assert config.anything


def test_setup_without_process_group_says_how_to_launch():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="accelerate launch"):
        ContextParallelConfig(ulysses_degree=2).setup()


def _setup_cases():
    from torch.distributed.device_mesh import init_device_mesh

    results = {}
    for degrees in [(1, 4), (4, 1), (2, 2)]:
        config = ContextParallelConfig(ring_degree=degrees[0], ulysses_degree=degrees[1]).setup()
        assert config.setup() is config  # idempotent
        # Shard order: flattened (ring, ulysses) rank == global rank with ulysses inner.
        assert config.rank == dist.get_rank()
        assert dist.get_world_size(config._ulysses_group) == degrees[1]
        assert dist.get_world_size(config._ring_group) == degrees[0]
        results[degrees] = (config._ring_rank, config._ulysses_rank)
    for bad in [(1, 2), (2, 4), (1, 8)]:
        with pytest.raises(ValueError, match="world size"):
            ContextParallelConfig(ring_degree=bad[0], ulysses_degree=bad[1]).setup()
    # A user mesh with an extra data-parallel dimension.
    mesh = init_device_mesh("cpu", (2, 1, 2), mesh_dim_names=("dp", "ring", "ulysses"))
    config = ContextParallelConfig(mesh=mesh).setup()
    assert (config.ring_degree, config.ulysses_degree, config.world_size) == (1, 2, 2)
    assert config.rank == dist.get_rank() % 2
    with pytest.raises(ValueError, match="contradicts"):
        ContextParallelConfig(ulysses_degree=4, mesh=mesh)
    bad_mesh = init_device_mesh("cpu", (4,), mesh_dim_names=("cp",))
    with pytest.raises(ValueError, match="named 'ring' and 'ulysses'"):
        ContextParallelConfig(mesh=bad_mesh)
    return results


def test_setup_on_four_ranks(pool):
    results = pool(4).run(_setup_cases)
    assert [r[(2, 2)] for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r[(1, 4)] for r in results] == [(0, 0), (0, 1), (0, 2), (0, 3)]

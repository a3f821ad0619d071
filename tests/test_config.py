"""ContextParallelConfig validation (single process) and setup against the world size (gloo ranks)."""

import pytest
import torch
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
    assert (config.ring_degree, config.ulysses_degree, config.convert_to_fp32, config.rotate_method) == (
        2, 1, True, "allgather")
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
        assert dist.get_world_size(config.runtime.ulysses_group) == degrees[1]
        assert dist.get_world_size(config.runtime.ring_group) == degrees[0]
        results[degrees] = (config.runtime.ring_rank, config.runtime.ulysses_rank)
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


def _runtime_is_a_snapshot():
    """A model keeps the runtime it was enabled with when its config is changed or set up again."""
    from torch.distributed.device_mesh import init_device_mesh

    import tiny_models
    from cp_hooks import disable_parallelism, enable_parallelism
    from cp_testing import rel_err

    model, inputs = tiny_models.tiny_flux()
    with torch.no_grad():
        reference = model(**inputs)[0]
        config = ContextParallelConfig(ulysses_degree=2)
        enable_parallelism(model, config)
        bound = config.runtime
        config.rotate_method = "alltoall"  # plain data: changing it does not touch the enabled model
        config.ring_degree, config.ulysses_degree = 2, 1
        config.setup(init_device_mesh("cpu", (2, 1), mesh_dim_names=("ring", "ulysses")))  # re-pointed: a new runtime
        assert config.runtime is not bound and config.runtime.ring_degree == 2
        assert bound.ulysses_degree == 2 and bound.rotate_method == "allgather"
        err = rel_err(model(**inputs)[0], reference)  # still Ulysses on the groups it was enabled with
        disable_parallelism(model)
    assert err <= 1e-5
    return err


def test_enabled_model_keeps_its_runtime(pool):
    pool(2).run(_runtime_is_a_snapshot)

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from distributed import DistributedPool  # noqa: E402

_POOLS: dict[tuple[int, str], DistributedPool] = {}


def get_pool(world: int, backend: str = "gloo") -> DistributedPool:
    if (world, backend) not in _POOLS:
        _POOLS[(world, backend)] = DistributedPool(world, backend=backend)
    return _POOLS[(world, backend)]


@pytest.fixture(scope="session")
def pool():
    """`pool(n)` gives the persistent pool of n gloo ranks; `pool(n, "nccl")` one of n GPU ranks."""
    yield get_pool
    for p in _POOLS.values():
        p.close()

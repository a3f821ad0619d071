import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from distributed import DistributedPool  # noqa: E402

_POOLS: dict[int, DistributedPool] = {}


def get_pool(world: int) -> DistributedPool:
    if world not in _POOLS:
        _POOLS[world] = DistributedPool(world)
    return _POOLS[world]


@pytest.fixture(scope="session")
def pool():
    """`pool(n)` gives the persistent pool of n gloo ranks."""
    yield get_pool
    for p in _POOLS.values():
        p.close()

"""Ulysses' memory at inference, measured: peak live bytes allocated during one attention call.

A rank's query shard (S/N tokens, H heads) and its gathered slice (S tokens, H/N heads) are the same size,
call it one shard. Ulysses needs the gathered q, k, v and the output (four shards) while it attends, and
at most that while exchanging; it must drop the gathered q, k, v before the output's all-to-all, which
would otherwise hold six.
"""

import torch
import torch.distributed as dist

from cp_hooks import context_parallel_attention
from cp_testing import make_config, peak_live_bytes

SHARDS_BOUND = 5.0  # four shards + the kernel's temporaries (0.3-0.6 shard); six without the early release


def ulysses_memory(seq, heads, head_dim):
    world = dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, seq // world, heads, head_dim, generator=g) for _ in range(3))
    config = make_config(1, world)
    with torch.no_grad():
        context_parallel_attention(q, k, v, config=config)  # warm-up: lazily created buffers
        peak = peak_live_bytes(lambda: context_parallel_attention(q, k, v, config=config))
    return peak / (q.numel() * q.element_size())


def test_ulysses_holds_at_most_four_shards(pool):
    for world in (2, 4):
        for rank, shards in enumerate(pool(world).run(ulysses_memory, 4096, 4, 64)):
            assert 3.0 <= shards <= SHARDS_BOUND, (world, rank, shards)

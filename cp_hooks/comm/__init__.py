"""Communication: every collective cp_hooks issues (`collectives.py`), with byte accounting (`stats.py`), the
CPU shared-memory transport (`shared_memory.py`) and the payload precision of attention tensors
(`precision.py`). Callers use `from cp_hooks import comm` and `comm.<name>`.
"""

from cp_hooks.comm.collectives import (
    AllToAll,
    RingExchange,
    all_gather,
    all_to_all,
    all_to_all_views,
    differentiable_all_to_all,
    exchange_sizes,
    group_by_key,
    group_key,
    group_rank,
    group_size,
    reduce_scatter,
    shares_memory,
)
from cp_hooks.comm.stats import CommStats, comm_stats, nbytes, record

__all__ = [
    "AllToAll",
    "CommStats",
    "RingExchange",
    "all_gather",
    "all_to_all",
    "all_to_all_views",
    "comm_stats",
    "differentiable_all_to_all",
    "exchange_sizes",
    "group_by_key",
    "group_key",
    "group_rank",
    "group_size",
    "nbytes",
    "record",
    "reduce_scatter",
    "shares_memory",
]

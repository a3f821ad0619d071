"""The control channel: rank 0's messages to every rank, and every rank's agreement, over a side gloo group.

Why a separate group: the model's collectives run on the context-parallel mesh (nccl on GPUs), and they must
see exactly the same sequence of calls on every rank. Control traffic (a pickled request, a status flag) is
small, lives on the host, and happens between model calls; putting it on its own gloo group keeps it off the
model's streams, lets it carry Python objects (gloo takes CPU tensors), works across nodes (TCP), and gives it
its own timeout. Every rank calls the channel's collectives in the same order, so no tags or ids are needed:
the n-th broadcast on rank 0 is the n-th broadcast everywhere.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as dist

# Status values exchanged by `agree`: the largest wins (an all-reduce MAX), so a fatal error on one rank
# overrides a request error elsewhere, which overrides success.
OK, FAILED, FATAL = 0, 1, 2


class ControlChannel:
    """Broadcast from rank 0 and all-rank agreement on a dedicated gloo process group.

    Must be constructed on every rank at the same point (it creates a process group, a collective call).

    Args:
        timeout_s: how long any of its collectives may wait for the slowest rank before raising; a dead or
            hung peer therefore turns into an exception on the survivors after at most this long (a dead
            peer's closed socket is usually noticed at once).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.group = dist.new_group(backend="gloo", timeout=self.timeout)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def broadcast(self, message: Any = None) -> Any:
        """Rank 0 sends `message` (any picklable object); every rank returns it. Others pass nothing.

        Only rank 0 ever sends, and it builds the message itself from a validated request, so unpickling on
        the other ranks reads data from a trusted peer, never from an HTTP client.
        """
        box = [message if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def agree(self, *values: int) -> list[int]:
        """The element-wise maximum of `values` over every rank (an all-reduce MAX on CPU tensors).

        The point where ranks that may have diverged (one raised, the others did not) learn the worst outcome
        and take the same branch afterwards.
        """
        flags = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        return flags.tolist()

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` (picklable) on rank 0, indexed by rank; None on the other ranks."""
        out = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(value, out, dst=0, group=self.group)
        return out

    def barrier(self, timeout_s: float) -> None:
        """Wait for every rank, up to `timeout_s` (longer than the channel's timeout: ranks load a model at
        different speeds). A rank that does not arrive in time makes rank 0 raise naming it."""
        dist.monitored_barrier(group=self.group, timeout=datetime.timedelta(seconds=timeout_s), wait_all_ranks=True)

"""Every collective cp_hooks issues, in one place, with byte accounting.

Shapes follow the legend `B` batch, `S` sequence, `H` heads, `D` head dim. All functions take a process
group and tensors on that group's device. None of them caches sizes across calls: ranks whose local sizes
differ would take different cache paths, and a collective that only some ranks enter hangs all of them.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CommStats:
    """Bytes sent / received and call counts per collective kind, for this rank."""

    bytes_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def total_sent(self) -> int:
        """All bytes this rank sent to other ranks."""
        return sum(self.bytes_sent.values())

    def as_dict(self) -> dict:
        """Plain-dict view for printing or JSON."""
        return {"bytes_sent": dict(self.bytes_sent), "bytes_received": dict(self.bytes_received), "calls": dict(self.calls)}


_ACTIVE_STATS: list[CommStats] = []

# torch >= 2.13 renames all_gather_into_tensor (and deprecates the old name); older releases have only it.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@contextlib.contextmanager
def comm_stats():
    """Count what cp_hooks communicates inside the block, per rank, by collective kind.

    Only bytes that leave or reach this rank are counted (a rank's own piece of an all-to-all or
    all-gather is not). Costs a few integer additions per collective.

    Example:
        >>> with comm_stats() as stats:
        ...     out = model(x)
        >>> stats.bytes_sent["all_to_all"]
    """
    stats = CommStats()
    _ACTIVE_STATS.append(stats)
    try:
        yield stats
    finally:
        _ACTIVE_STATS.remove(stats)


def _record(kind: str, sent: int, received: int) -> None:
    for stats in _ACTIVE_STATS:
        stats.bytes_sent[kind] += sent
        stats.bytes_received[kind] += received
        stats.calls[kind] += 1


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def group_size(group) -> int:
    return dist.get_world_size(group)


def group_rank(group) -> int:
    return dist.get_rank(group)


def exchange_sizes(values: list[int], group, device) -> list[list[int]]:
    """All-gather a few ints from every rank: returns `result[rank] == that rank's values`.

    Called every forward in the anything modes (never cached, see module docstring). One tiny collective.
    """
    local = torch.tensor(values, dtype=torch.int64, device=device)
    out = torch.empty(group_size(group) * len(values), dtype=torch.int64, device=device)
    _all_gather_single(out, local, group=group)
    _record("size_exchange", _nbytes(local) * (group_size(group) - 1), _nbytes(local) * (group_size(group) - 1))
    return out.view(group_size(group), len(values)).tolist()


def all_to_all(x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int], group) -> torch.Tensor:
    """Send rows `x.split(send_sizes)[j]` (dim 0) to rank j; return the received rows in rank order."""
    rank = group_rank(group)
    x = x.contiguous()
    out = x.new_empty((sum(recv_sizes),) + tuple(x.shape[1:]))
    even = len(set(send_sizes)) == 1 and len(set(recv_sizes)) == 1
    dist.all_to_all_single(out, x, None if even else recv_sizes, None if even else send_sizes, group=group)
    row = _row_bytes(x)
    _record("all_to_all", row * (sum(send_sizes) - send_sizes[rank]), row * (sum(recv_sizes) - recv_sizes[rank]))
    return out


def _row_bytes(x: torch.Tensor) -> int:
    n = x.element_size()
    for s in x.shape[1:]:
        n *= s
    return n


def all_gather(x: torch.Tensor, sizes: list[int] | None, group, dim: int) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim`. `sizes` (per-rank lengths along `dim`) may be None when equal.

    Uneven pieces are padded to the longest and sliced after one all-gather: gloo's list all-gather
    refuses pieces of different sizes, and one fused call is faster than N broadcasts anyway.
    """
    world = group_size(group)
    rank = group_rank(group)
    x = x.movedim(dim, 0)
    if sizes is None:
        sizes = [x.shape[0]] * world
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))])
    x = x.contiguous()
    out = x.new_empty((longest * world,) + tuple(x.shape[1:]))
    _all_gather_single(out, x, group=group)
    if len(set(sizes)) > 1:
        out = torch.cat([out[r * longest : r * longest + sizes[r]] for r in range(world)])
    row = _row_bytes(x)
    # Counted as a ring all-gather moves it: each rank's (padded) piece reaches the N-1 others.
    _record("all_gather", row * longest * (world - 1), row * longest * (world - 1))
    return out.movedim(0, dim)


class RingExchange:
    """One step of a ring: send tensors to the next rank and receive the previous rank's, asynchronously.

    `start()` posts the batched send/recv and returns at once; `wait()` returns the received tensors. The
    caller computes on its current tensors in between, which is what hides the transfer.
    """

    def __init__(self, group) -> None:
        self.group = group
        self.world = group_size(group)
        self.rank = group_rank(group)
        self.next_rank = dist.get_global_rank(group, (self.rank + 1) % self.world)
        self.prev_rank = dist.get_global_rank(group, (self.rank - 1) % self.world)
        self._works = []
        self._received: list[torch.Tensor] = []

    def start(self, tensors: list[torch.Tensor], recv_shapes: list[torch.Size]) -> None:
        """Post sends of `tensors` to the next rank and receives of `recv_shapes` from the previous one."""
        ops = []
        self._received = [t.new_empty(shape) for t, shape in zip(tensors, recv_shapes)]
        for t, r in zip(tensors, self._received):
            ops.append(dist.P2POp(dist.isend, t.contiguous(), self.next_rank, self.group))
            ops.append(dist.P2POp(dist.irecv, r, self.prev_rank, self.group))
        self._works = dist.batch_isend_irecv(ops)
        _record("send_recv", sum(_nbytes(t) for t in tensors), sum(_nbytes(r) for r in self._received))

    def wait(self) -> list[torch.Tensor]:
        """Block until the posted transfers finish; return the received tensors."""
        for work in self._works:
            work.wait()
        self._works = []
        received, self._received = self._received, []
        return received


class AllToAll(torch.autograd.Function):
    """Differentiable `all_to_all`: the backward is the all-to-all with send and receive sizes swapped."""

    @staticmethod
    def forward(ctx, x, send_sizes, recv_sizes, group):
        ctx.args = (send_sizes, recv_sizes, group)
        return all_to_all(x, send_sizes, recv_sizes, group)

    @staticmethod
    def backward(ctx, grad):
        send_sizes, recv_sizes, group = ctx.args
        return all_to_all(grad, recv_sizes, send_sizes, group), None, None, None

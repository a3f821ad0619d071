"""Every collective cp_hooks issues, in one place, each counted in the byte accounting (`stats.py`).

Shapes follow the legend `B` batch, `S` sequence, `H` heads, `D` head dim. All functions take a process
group and tensors on that group's device. None of them caches sizes across calls: ranks whose local sizes
differ would take different cache paths, and a collective that only some ranks enter hangs all of them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.distributed as dist

from cp_hooks.comm import shared_memory
from cp_hooks.comm.stats import counting
from cp_hooks.comm.stats import nbytes as _nbytes
from cp_hooks.comm.stats import record as _record

# torch >= 2.13 renames all_gather_into_tensor (and deprecates the old name); older releases have only it.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


_GROUPS: dict[int, object] = {}  # group_key -> process group, for registered operators (they take no objects)


def group_key(group) -> int:
    """An integer naming `group` (None: the default group) in registered operators' arguments."""
    group = dist.group.WORLD if group is None else group
    key = id(group)
    _GROUPS[key] = group
    return key


def group_by_key(key: int):
    """The process group `group_key` named."""
    return _GROUPS[key]


def group_size(group) -> int:
    # The ProcessGroup's own method: dist.get_world_size(group) adds a logging wrapper and lookups that
    # cost as much as a small copy, several times per attention call.
    return dist.get_world_size() if group is None else group.size()


def group_rank(group) -> int:
    return dist.get_rank() if group is None else group.rank()


def exchange_sizes(values: list[int], group, device, payload: str = "sizes") -> list[list[int]]:
    """All-gather a few ints from every rank: returns `result[rank] == that rank's values`.

    Called by the anything modes (`cp_hooks.length_memo` says when), and by the strict input check
    (`payload="consistency"`). One tiny collective, on `device` (the caller's tensors'), except in a gloo
    group, which takes CPU tensors.
    """
    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend and "nccl" not in backend:
        device = torch.device("cpu")
    local = torch.tensor(values, dtype=torch.int64, device=device)
    out = torch.empty(group_size(group) * len(values), dtype=torch.int64, device=device)
    _all_gather_single(out, local, group=group)
    others = group_size(group) - 1
    _record("all_gather", _nbytes(local) * others, _nbytes(local) * others, payload=payload)
    return out.view(group_size(group), len(values)).tolist()


def all_to_all(
    x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int], group, *, payload: str = "attention"
) -> torch.Tensor:
    """Send rows `x.split(send_sizes)[j]` (dim 0) to rank j; return the received rows in rank order.

    Attention uses it (Ulysses, and the all-gather ring's backward: payload "attention"), and so does the
    backward of a plan's gather (a reduce-scatter: payload "other"). CPU ranks of a gloo group on one host,
    a core each, exchange through shared memory (`shared_memory` says when), the others with
    `all_to_all_single`; the bytes counted are the same.
    """
    rank = group_rank(group)
    row = _row_bytes(x)
    transport = shared_memory.transport_for(group, x)
    out = None if transport is None else transport.all_to_all(x, send_sizes, recv_sizes)  # any strides
    if out is None:
        x = x.contiguous()
        out = x.new_empty((sum(recv_sizes),) + tuple(x.shape[1:]))
        even = len(set(send_sizes)) == 1 and len(set(recv_sizes)) == 1
        dist.all_to_all_single(out, x, None if even else recv_sizes, None if even else send_sizes, group=group)
    _record(
        "all_to_all",
        row * (sum(send_sizes) - send_sizes[rank]),
        row * (sum(recv_sizes) - recv_sizes[rank]),
        payload=payload,
    )
    return out


def shares_memory(group, x: torch.Tensor) -> bool:
    """Whether the group's all-to-alls of `x` go through shared memory (collective at the group's first one)."""
    transport = shared_memory.transport_for(group, x)
    return transport is not None and transport.disabled_reason is None


def all_to_all_views(
    sources: Sequence[torch.Tensor], out: torch.Tensor, recv_sizes: list[int], group, *, payload: str = "attention"
) -> bool:
    """Through shared memory only: `sources[j]` to rank j, rank j's piece into `out.split(recv_sizes)[j]`.

    The pieces and `out` may be views with any strides (a permutation): the copies into and out of the shared
    buffer do the layout change that packing a contiguous send buffer and unpacking the received rows would
    otherwise do, two copies fewer. What rank i sends rank j has the shape of rank j's piece i (up to
    leading 1s). Returns False, having sent nothing, where the group's all-to-alls go through gloo (which
    needs contiguous buffers): the caller then packs them and calls `all_to_all`. Every rank of the group
    gets the same answer. No autograd.
    """
    transport = shared_memory.transport_for(group, out)
    if transport is None or not transport.exchange(sources, out.split_with_sizes(recv_sizes)):
        return False
    rank, size = group_rank(group), out.element_size()
    sent = sum(t.numel() for j, t in enumerate(sources) if j != rank) * size
    received = (out.numel() - out.narrow(0, sum(recv_sizes[:rank]), recv_sizes[rank]).numel()) * size
    _record("all_to_all", sent, received, payload=payload)
    return True


def _row_bytes(x: torch.Tensor) -> int:
    return x.element_size() * math.prod(x.shape[1:])


def all_gather(x: torch.Tensor, sizes: list[int] | None, group, dim: int, *, payload: str = "other") -> torch.Tensor:
    """Concatenate every rank's `x` along `dim`. `sizes` (per-rank lengths along `dim`) may be None when equal.

    `payload` labels the bytes for `comm_stats()`: "attention" (K/V), "mask" (a key bias) or "other".

    Uneven pieces are padded to the longest and sliced after one all-gather: gloo's list all-gather
    refuses pieces of different sizes, and one fused call is faster than N broadcasts anyway.
    """
    world = group_size(group)
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
    _record("all_gather", row * longest * (world - 1), row * longest * (world - 1), payload=payload)
    return out.movedim(0, dim)


def reduce_scatter(x: torch.Tensor, sizes: list[int], group, dim: int, *, payload: str = "other") -> torch.Tensor:
    """Sum `x` over the group and return this rank's piece `sizes[rank]` along `dim` (the inverse of `all_gather`).

    Built from one all-to-all (rank j receives every rank's piece j) and a local sum: gloo has no
    reduce-scatter, and this moves the same bytes as one, through the same transport as attention.
    """
    world, rank = group_size(group), group_rank(group)
    rows = all_to_all(x.movedim(dim, 0), sizes, [sizes[rank]] * world, group, payload=payload)
    summed = rows.view(world, sizes[rank], *rows.shape[1:]).sum(0)
    return summed.movedim(0, dim)


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
        self._works: list[dist.Work] = []
        self._received: list[torch.Tensor] = []

    def start(
        self, tensors: list[torch.Tensor], recv_shapes: list[torch.Size], payloads: list[str] | None = None
    ) -> None:
        """Post sends of `tensors` to the next rank and receives of `recv_shapes` from the previous one.

        `payloads` labels each tensor for `comm_stats()` (default: all "attention"; the ring is attention's).
        """
        ops = []
        self._received = [t.new_empty(shape) for t, shape in zip(tensors, recv_shapes)]
        for t, r in zip(tensors, self._received):
            ops.append(dist.P2POp(dist.isend, t.contiguous(), self.next_rank, self.group))
            ops.append(dist.P2POp(dist.irecv, r, self.prev_rank, self.group))
        self._works = dist.batch_isend_irecv(ops)
        if not counting():
            return
        by_payload: defaultdict[str, int] = defaultdict(int)
        for t, name in zip(tensors, payloads or ["attention"] * len(tensors)):
            by_payload[name] += _nbytes(t)
        _record("send_recv", sum(_nbytes(t) for t in tensors), sum(_nbytes(r) for r in self._received), by_payload)

    def wait(self) -> list[torch.Tensor]:
        """Block until the posted transfers finish; return the received tensors."""
        for work in self._works:
            work.wait()
        self._works = []
        received, self._received = self._received, []
        return received


def differentiable_all_to_all(x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int], group) -> torch.Tensor:
    """`all_to_all` with a backward (the reverse all-to-all) when autograd needs one.

    Inference skips the autograd.Function: its bookkeeping costs about as much as the Python around the
    collective, and nothing would use it.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return AllToAll.apply(x, send_sizes, recv_sizes, group)
    return all_to_all(x, send_sizes, recv_sizes, group)


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

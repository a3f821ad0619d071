"""Byte accounting: what cp_hooks communicates, per rank, by collective kind and by payload (`comm_stats`)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import torch


@dataclass(eq=False)  # identity, not contents: comm_stats() removes *its* block from a stack of nested ones
class CommStats:
    """What this rank communicated inside a `comm_stats()` block.

    Three counters keyed by collective kind — "all_to_all", "all_gather", "send_recv" — and one keyed by
    payload, so that the attention data can be compared with the formulas of docs/architecture.md on its own:
      * "attention": queries, keys, values and outputs of attention (and their gradients in a backward) — what
        the formulas count;
      * "mask": key-padding biases that travel with their keys (4 bytes per key: small, but not in the formulas);
      * "sizes": per-rank lengths exchanged by the anything modes (a few int64s per call, in the first
        forward of an input shape: later ones remember them, `cp_hooks.length_memo`);
      * "consistency": the strict mode's input fingerprint (one int64 per forward);
      * "other": everything else, today the plan's output gathers (`ContextParallelOutput`), once per forward.
    A payload's bytes are also in its collective kind's counter, so `total_sent` is everything that left.

    Attributes:
        bytes_sent / bytes_received: kind -> bytes that left / reached this rank.
        calls: kind -> number of collectives issued (a batched ring send/recv step is one call).
        payload_sent: payload -> bytes that left this rank.
    """

    bytes_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    payload_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def total_sent(self) -> int:
        """All bytes this rank sent to other ranks."""
        return sum(self.bytes_sent.values())

    def as_dict(self) -> dict:
        """Plain-dict view for printing or JSON."""
        return {
            "bytes_sent": dict(self.bytes_sent),
            "bytes_received": dict(self.bytes_received),
            "calls": dict(self.calls),
            "payload_sent": dict(self.payload_sent),
        }


_ACTIVE_STATS: list[CommStats] = []


@contextlib.contextmanager
def comm_stats():
    """Count what cp_hooks communicates inside the block, per rank, by collective kind.

    Only bytes that leave or reach this rank are counted (a rank's own piece of an all-to-all or
    all-gather is not). An all-gather counts this rank's piece once per other rank, as a ring all-gather
    sends it (uneven pieces are padded to the longest first, and the padding is counted: it is sent).
    Costs a few integer additions per collective, so it can stay on in a benchmark. Blocks may nest.

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


def record(kind: str, sent: int, received: int, payload: str | dict[str, int]) -> None:
    """Count one collective. `payload` names what was sent, or maps payload -> bytes for a mixed call."""
    for stats in _ACTIVE_STATS:
        stats.bytes_sent[kind] += sent
        stats.bytes_received[kind] += received
        stats.calls[kind] += 1
        for name, n in ({payload: sent} if isinstance(payload, str) else payload).items():
            stats.payload_sent[name] += n


def nbytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements."""
    return t.numel() * t.element_size()


def counting() -> bool:
    """True inside at least one `comm_stats()` block (callers skip building a payload breakdown otherwise)."""
    return bool(_ACTIVE_STATS)

"""Every rank's lengths in an eager forward: exchanged in the first forward of a shape, remembered after.

In the anything modes ranks hold shards of different lengths, and each attention call and uneven gather
needs every rank's length. Exchanging them costs a collective and a host synchronisation per call. But the
calls of a forward come in the same order on every rank, and their lengths follow from what the model was
called with. So the first eager forward of a *signature* (`signature`: the enabled model, the shapes of its
arguments, the values of its small integer and boolean tensors such as masks, and its integer, boolean and
string arguments) exchanges each call's lengths and remembers them by the call's position in the forward; a
later forward of the same signature reads call k's lengths from call k.

Why this cannot hang: whether a call is read from memory depends only on what every rank has alike — the
signature (the inputs are replicated), the call's position, and the full lengths the plan's splits
recorded before it (`SplitLengths.state`, also replicated). So every rank reads, or every rank exchanges.

What can still go wrong is a model whose shard lengths depend on values the signature does not read
(floating-point inputs, state kept between calls), so that the same signature gives another local length
on some rank. That rank still takes part in the collectives with the
remembered lengths (its tensor is padded or cut to them, `conform`), records the failure, and at the
forward's end every rank learns of it from the forward's value-check all-reduce and raises
(`cp_hooks.value_checks`); the signature is then exchanged every call from then on
(docs/architecture.md, "Per-rank lengths").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from cp_hooks.forward import value_checks

_MAX_SIGNATURES = 16  # shapes remembered at once; the oldest is forgotten first (in the same order everywhere)
_MAX_VALUES_READ = 1 << 16  # integer / boolean tensors up to this many elements are read into the signature
MISMATCH_KIND = "lengths"  # the value-check kind a length mismatch is recorded under


def signature(owner: object, args: tuple, kwargs: dict) -> tuple:
    """What a forward's lengths can depend on: the enabled model (`owner`, an object of its hooks, compared by
    identity: never the `id` of a module, which a later model could reuse on one rank and not on another), the
    shapes of its tensor arguments, the values of its small integer and boolean tensors (masks and ids: a
    model may keep each rank's valid tokens only, as Mochi does with its text), and its integer, boolean and
    string arguments. Floating-point values set no length (and change every step)."""
    return (owner, _describe(args), _describe(tuple(sorted(kwargs.items(), key=lambda kv: kv[0]))))


def _describe(value, depth: int = 0):
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or not (value.is_floating_point() or value.is_complex()):
            if value.numel() <= _MAX_VALUES_READ:  # one small read per forward, on the host
                digest = _digest(value)
                if digest is not None:
                    return ("V", tuple(value.shape), str(value.dtype), digest)
        return ("T", tuple(value.shape))
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if depth < 3 and isinstance(value, (list, tuple)):
        return tuple(_describe(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return tuple((k, _describe(v, depth + 1)) for k, v in value.items())
    return type(value).__name__


def _digest(value: torch.Tensor) -> bytes | None:
    """A hash of a tensor's bytes, or None for a layout that has none to read (sparse, quantized): its shape
    alone then stands for it (the same on every rank, whose inputs are the same)."""
    try:
        data = value.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    return hashlib.blake2b(data, digest_size=16).digest()


class _Forward:
    """One forward in progress: its signature and how many calls it has made."""

    def __init__(self, key: tuple | None) -> None:
        self.key = key
        self.calls = 0


class LengthMemo:
    """The per-call lengths of eager forwards, by signature (see the module docstring)."""

    def __init__(self) -> None:
        self._memory: dict[tuple, list] = {}  # signature -> [(split state, lengths)] by call position
        self._unstable: set[tuple] = set()  # signatures whose lengths changed: exchanged every call
        self._active: list[_Forward] = []

    def begin(self, key: tuple | None) -> None:
        """A forward with signature `key` starts (the model's first hook, eager only); None: one not remembered."""
        self._active.append(_Forward(key))

    def end(self) -> tuple | None:
        """The innermost forward ended (also by an exception); returns its signature."""
        return self._active.pop().key if self._active else None

    def forget(self, key: tuple | None) -> None:
        """Lengths of `key` changed under one signature: exchange them every call from now on."""
        if key is not None:
            self._memory.pop(key, None)
            self._unstable.add(key)

    def lengths(
        self, local: tuple[int, ...], state: tuple, rank: int, exchange: Callable[[], list[list[int]]]
    ) -> list[list[int]]:
        """Every rank's values of `local` (`result[i][r]` = value i on rank r), remembered or exchanged.

        Args:
            local: this rank's lengths in this call (e.g. its query and key lengths).
            state: the plan's recorded split lengths so far (`SplitLengths.state()`), alike on every rank.
            rank: this rank's index in the rows `exchange` returns.
            exchange: the collective that all-gathers `local` (`rows[r]` = rank r's values).
        """
        forward = self._active[-1] if self._active else None
        if forward is None or forward.key is None or forward.key in self._unstable:
            return _columns(exchange())
        position = forward.calls
        forward.calls += 1
        calls = self._memory.get(forward.key)
        if calls is not None and position < len(calls) and calls[position][0] == state:
            remembered = calls[position][1]
            mine = tuple(column[rank] for column in remembered)
            same = tuple(local) == mine
            message = (
                ""
                if same
                else (
                    f"cp_hooks: this rank's lengths {tuple(local)} differ from {mine}, which an earlier forward "
                    "with the same input shapes had at this call: the model's shard lengths depend on values, "
                    "not shapes alone. Its lengths are exchanged every call from now on; run the forward again."
                )
            )
            value_checks.record(same, message, kind=MISMATCH_KIND)
            return remembered
        columns = _columns(exchange())
        if calls is None:
            if len(self._memory) >= _MAX_SIGNATURES:
                self._memory.pop(next(iter(self._memory)))
            calls = self._memory[forward.key] = []
        del calls[position:]  # this forward took another path from here: what followed no longer applies
        calls.append((state, columns))
        return columns


def _columns(rows: list[list[int]]) -> list[list[int]]:
    return [list(column) for column in zip(*rows)]


def conform(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`x` cut or zero-padded to `length` along `dim`: only after a recorded length mismatch, so that this
    rank's collectives still carry what its peers expect (the forward's result is then discarded)."""
    have = x.shape[dim]
    if have == length:
        return x
    if have > length:
        return x.narrow(dim, 0, length)
    shape = list(x.shape)
    shape[dim] = length - have
    return torch.cat([x, x.new_zeros(shape)], dim=dim)

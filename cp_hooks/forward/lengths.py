"""Every rank's sequence length, known from the plan's splits instead of exchanged per call.

In the anything modes ranks hold shards of different lengths, and Ulysses, the ring and the plan's gathers
need every rank's length. Exchanging them costs a collective and a host synchronisation per call, and a
compiled graph cannot have shapes that come from a collective. But each shard is piece r of
`tensor_split(L, N)` of some full length L the split hooks saw in this forward, so the lengths follow from
the Ls: a split records its L (`record`), and a later tensor of local length s on rank r has the lengths
of the recorded split (or of a concatenation of several, as in joint text + image attention) whose
piece r is s. Everything here is computed from shapes, the same on every rank, once per distinct length
(docs/architecture.md, "Per-rank lengths").

Safety: rank r only sees its own s. If two different candidates agreed at some rank's index, that rank
could pick another candidate than its peers, and their collectives would disagree; so the candidates are
used only when no two of them agree at any index. A length that comes from no recorded split can still
match a candidate on one rank and none on another, so only compiled graphs — which cannot exchange
lengths — derive them; eager code exchanges them, once per call position and input shape
(`cp_hooks.length_memo`; docs/architecture.md, "Per-rank lengths").
"""

from __future__ import annotations

import itertools

_MAX_DISTINCT = 6  # concatenations of up to this many distinct recorded lengths are considered


def shard_sizes(length: int, world: int) -> list[int]:
    """Lengths of the `world` pieces of `tensor_split` over `length` elements (the first ranks hold one more).

    Branch-free, so that a symbolic length (torch.compile with dynamic shapes) needs no guard.
    """
    return [(length + world - 1 - r) // world for r in range(world)]


class SplitLengths:
    """The full lengths the plan split in the current forward (reset by the model's first hook).

    `lengths` serves the anything modes (every rank's length of a later tensor); `named` holds the full
    lengths of splits tagged with `ContextParallelInput(tag=...)`, which a segmented split reads to cut a
    concatenation of token streams piece by piece (`plan.ContextParallelInput.segments`).
    """

    def __init__(self) -> None:
        self.lengths: list[int] = []
        self.named: dict[str, int] = {}

    def reset(self) -> None:
        """Forget the previous forward's lengths."""
        self.lengths = []
        self.named = {}

    def record_named(self, tag: str, length: int) -> None:
        """A split tagged `tag` cut a tensor of full length `length` in this forward."""
        self.named = {**self.named, tag: length}  # a new dict: traced code sees a plain rebinding

    def record(self, length: int) -> None:
        """A split of a tensor of full length `length` happened in this forward."""
        if length not in self.lengths:
            self.lengths = self.lengths + [length]  # a new list: traced code sees a plain rebinding

    def state(self) -> tuple:
        """Everything recorded so far in this forward, alike on every rank (`cp_hooks.length_memo` keys on it)."""
        return tuple(self.lengths), tuple(sorted(self.named.items()))

    def sizes(self, local: int, world: int, rank: int) -> list[int] | None:
        """Every rank's length of a tensor whose local length here is `local`, or None when not known safely."""
        if not self.lengths or len(self.lengths) > _MAX_DISTINCT:
            return None
        pieces = [shard_sizes(length, world) for length in self.lengths]
        candidates = []
        for count in range(1, len(pieces) + 1):
            for combo in itertools.combinations(pieces, count):
                total = [sum(column) for column in zip(*combo)]
                if total not in candidates:
                    candidates.append(total)
        for index in range(world):
            values = [c[index] for c in candidates]
            if len(set(values)) != len(values):
                return None  # two candidates agree at a rank: that rank could not tell them apart
        matches = [c for c in candidates if c[rank] == local]
        return matches[0] if matches else None

"""The context-parallel modes the catalogue verifies, by name (the columns of the models table, docs/models.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """One context-parallel layout: `ring` x `ulysses` ranks and the ring's rotate method.

    Example:
        >>> Mode(2, 1, "alltoall").name
        'ring 2 (alltoall)'
    """

    ring: int
    ulysses: int
    rotate: str = "allgather"

    @property
    def world(self) -> int:
        """Ranks the mode needs."""
        return self.ring * self.ulysses

    @property
    def name(self) -> str:
        """A short label, e.g. 'ulysses 2', 'ring 2 (alltoall)', 'ring 2 x ulysses 2 (allgather)'."""
        if self.ring == 1:
            return f"ulysses {self.ulysses}"
        ring = f"ring {self.ring}" if self.ulysses == 1 else f"ring {self.ring} x ulysses {self.ulysses}"
        return f"{ring} ({self.rotate})"

    def config_kwargs(self, anything: bool = False) -> dict:
        """Keyword arguments of `ContextParallelConfig` for this mode (anything flags where they apply)."""
        kwargs = dict(ring_degree=self.ring, ulysses_degree=self.ulysses, rotate_method=self.rotate)
        if anything:
            kwargs.update(ulysses_anything=self.ulysses > 1, ring_anything=self.ring > 1)
        return kwargs


ULYSSES_2 = Mode(1, 2)
RING_2 = Mode(2, 1, "allgather")
RING_2_ALLTOALL = Mode(2, 1, "alltoall")
HYBRID_2x2 = Mode(2, 2, "alltoall")

MODES_2 = (ULYSSES_2, RING_2, RING_2_ALLTOALL)
HYBRID_MODES = (HYBRID_2x2,)

"""The slab layout of one parallel VAE call: which rows of every feature map each rank holds.

A parallel `decode` / `encode` splits its input along height into `world` slabs whose boundaries sit on
whole latent rows: rank r holds latent rows piece r of `tensor_split(world)` (`units[r]` rows, uneven
allowed), and at any resolution of the network (pixel rows = latent rows x compression factor, and every
level in between) its slab is `units[r] * scale` rows, where `scale = local height / units[rank]`. Because
every boundary is a multiple of the total down/upsampling factor, a stride-2 convolution, a nearest 2x
upsample or a space-to-depth reshape maps each rank's slab exactly onto its slab at the next level, with no
row shared or dropped. The layout therefore needs no communication to be known by any layer: the
local height is enough.

The active layout lives in a per-thread slot set by the decode/encode wrapper (`api.py`); every patched
layer reads it and runs unchanged when it is empty (outside a parallel call, or in the whole-image fallback).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch.distributed as dist

_LOCAL = threading.local()


@dataclass(frozen=True)
class SlabLayout:
    """The split of one parallel VAE call.

    Attributes:
        group: the process group the slabs are spread over (never None: the world group is explicit).
        rank: this process's rank in `group`.
        world: the size of `group`.
        units: latent rows per rank (the split at the latent resolution); every entry >= 1.
    """

    group: dist.ProcessGroup
    rank: int
    world: int
    units: tuple[int, ...]

    def rows(self, local_height: int) -> tuple[int, int, list[int]]:
        """The global row range of this rank's slab at the resolution whose local height is `local_height`.

        Args:
            local_height: the height (dim -2) of this rank's tensor at the current layer.

        Returns:
            `(start, stop, sizes)`: this rank's rows `[start, stop)` and every rank's slab height.

        Raises:
            RuntimeError: the height is not a whole multiple of this rank's latent rows times the layer's
                scale (a layer changed the height in a way the aligned layout cannot follow).
        """
        own = self.units[self.rank]
        sizes = []
        for u in self.units:
            if (u * local_height) % own:
                raise RuntimeError(
                    f"cp_hooks VAE parallelism: a feature map of local height {local_height} does not follow the "
                    f"slab layout {self.units} (rank {self.rank}); this VAE changes heights in a way the "
                    "row split cannot map exactly"
                )
            sizes.append(u * local_height // own)
        start = sum(sizes[: self.rank])
        return start, start + sizes[self.rank], sizes

    def global_rank(self, group_rank: int) -> int:
        """The default-group rank of `group_rank` in `group` (point-to-point ops address global ranks)."""
        return dist.get_global_rank(self.group, group_rank)


def current() -> SlabLayout | None:
    """The layout of the parallel VAE call running on this thread, or None."""
    return getattr(_LOCAL, "layout", None)


@contextlib.contextmanager
def active(layout: SlabLayout | None):
    """Make `layout` the current one inside the block (None: run layers whole, e.g. in the fallback)."""
    previous = current()
    _LOCAL.layout = layout
    try:
        yield layout
    finally:
        _LOCAL.layout = previous

"""Halo rows: the rows just above and below a rank's slab, fetched from the neighbouring ranks.

A convolution whose kernel reaches `up` rows above and `down` rows below an output row needs, at a slab
boundary, rows that another rank holds. They come point-to-point from the two neighbours only (a batched
isend/irecv): rank r sends its top `down` rows to r-1 and its bottom `up` rows to r+1. That moves
`(up + down) * row bytes` per interior rank and per call, independent of the number of ranks, where an
all-gather of edge rows would move N-1 times as much. Rank 0 gets nothing above and the last rank nothing
below: there the layer's own padding (zeros, replicate, ...) applies, exactly as on the whole image.

Inference only: the exchange has no autograd formula (a VAE decode after sampling needs none).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cp_hooks import comm
from cp_hooks.vae.slab import SlabLayout

HALO_PAYLOAD = "vae_halo"


def extend_with_halo(
    tensors: list[torch.Tensor], up: int, down: int, layout: SlabLayout, sizes: list[int]
) -> list[torch.Tensor]:
    """Return each tensor with `up` neighbour rows prepended and `down` appended along dim -2 (`fetch_halo`)."""
    return [
        torch.cat([p for p in (top, t, bottom) if p is not None], dim=-2)
        if (top is not None or bottom is not None)
        else t
        for t, (top, bottom) in zip(tensors, fetch_halo(tensors, up, down, layout, sizes))
    ]


def fetch_halo(
    tensors: list[torch.Tensor], up: int, down: int, layout: SlabLayout, sizes: list[int]
) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """The `up` rows above and `down` rows below each tensor's slab, from the neighbouring ranks.

    Args:
        tensors: this rank's slabs (same height), e.g. a convolution's input and its temporal cache.
        up: rows needed from the rank above (none are fetched on rank 0).
        down: rows needed from the rank below (none are fetched on the last rank).
        layout: the active slab layout.
        sizes: every rank's slab height at this resolution (`layout.rows(h)[2]`).

    Returns:
        For each tensor, (rows from above or None on rank 0, rows from below or None on the last rank).

    Raises:
        RuntimeError: a neighbour's slab is thinner than the halo it must send (cannot happen with the
            minimum slab `api.py` enforces; checked so that a new layer type fails loudly, not silently).
    """
    rank, world = layout.rank, layout.world
    has_prev, has_next = rank > 0 and up + down > 0, rank < world - 1 and up + down > 0
    for neighbour, need in ((rank - 1, up) if has_prev else (None, 0), (rank + 1, down) if has_next else (None, 0)):
        if neighbour is not None and sizes[neighbour] < need:
            raise RuntimeError(
                f"cp_hooks VAE parallelism: rank {neighbour}'s slab has {sizes[neighbour]} rows, "
                f"fewer than the {need}-row halo a convolution needs"
            )
    ops, received, sent_bytes, recv_bytes = [], [], 0, 0
    for t in tensors:
        t = t.contiguous()
        top = bottom = None
        if has_prev:
            if down:  # the rank above needs my first `down` rows below its slab
                piece = t[..., :down, :].contiguous()
                ops.append(dist.P2POp(dist.isend, piece, layout.global_rank(rank - 1), layout.group))
                sent_bytes += piece.numel() * piece.element_size()
            if up:
                top = t.new_empty(t.shape[:-2] + (up, t.shape[-1]))
                ops.append(dist.P2POp(dist.irecv, top, layout.global_rank(rank - 1), layout.group))
                recv_bytes += top.numel() * top.element_size()
        if has_next:
            if up:  # the rank below needs my last `up` rows above its slab
                piece = t[..., t.shape[-2] - up :, :].contiguous()
                ops.append(dist.P2POp(dist.isend, piece, layout.global_rank(rank + 1), layout.group))
                sent_bytes += piece.numel() * piece.element_size()
            if down:
                bottom = t.new_empty(t.shape[:-2] + (down, t.shape[-1]))
                ops.append(dist.P2POp(dist.irecv, bottom, layout.global_rank(rank + 1), layout.group))
                recv_bytes += bottom.numel() * bottom.element_size()
        received.append((top, bottom))
    if ops:
        for request in dist.batch_isend_irecv(ops):
            request.wait()
        comm.record("send_recv", sent_bytes, recv_bytes, payload=HALO_PAYLOAD)
    return received

"""Small helpers the catalogue's input builders share (random tensors from one generator, position ids)."""

from __future__ import annotations

import torch


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal fp32 tensor drawn from `g`."""
    return torch.randn(*shape, generator=g)


def grid_ids(*sizes: int, lead: int = 0) -> torch.Tensor:
    """(prod(sizes), lead + len(sizes)) integer coordinates of a grid in row-major order, as float.

    `lead` leading zero columns come first (e.g. Flux's unused first id axis).
    """
    axes = torch.meshgrid(*(torch.arange(s) for s in sizes), indexing="ij")
    coords = torch.stack([a.reshape(-1) for a in axes], dim=-1).float()
    return torch.cat([torch.zeros(coords.shape[0], lead), coords], dim=-1)


def padding_mask(batch: int, length: int, valid: list[int], dtype=torch.bool) -> torch.Tensor:
    """(batch, length) mask that keeps the first `valid[b]` tokens of each row (True/1 = attend)."""
    keep = torch.arange(length)[None, :] < torch.tensor(valid)[:, None]
    return keep.to(dtype)

"""Payload precision: what attention tensors travel in when `ContextParallelConfig.comm_dtype` is set.

Pure functions; no collective. Attention calls them where they pack q, k, v and the output into Ulysses'
all-to-alls (`cp_hooks.attention.ops`) and the K/V blocks into the ring (`cp_hooks.attention.ring`).

Which dtype a tensor travels in (`travel_dtype`):
  * `comm_dtype=None`: its own dtype (nothing changes).
  * `torch.bfloat16` / `torch.float16`: a plain cast, only where it narrows (an fp32 model's traffic halves;
    a bf16 tensor is never re-cast to fp16, which would lose range for no byte saved).
  * `torch.float8_e4m3fn` / `torch.float8_e5m2`: scaled fp8, one fp32 scale per (token, head) row of head_dim
    values (below). Keys travel in bf16 instead (or in their own dtype when that is no wider) unless
    `comm_fp8_keys=True`: the scores are q·k, a key error e moves every score of the row by q·e, and the
    softmax turns score errors into relative weight errors (exp), so keys are the tensor where fp8 costs
    most (measured in docs/comm_precision.md).

The fp8 formulas (x one row of head_dim values, computed in float32; F = torch.finfo(fp8).max):
    scale = amax(|x|) / F          (a row of zeros gets scale 1, so that 0 / scale stays 0)
    x8    = (x / scale).to(fp8)    (round to nearest; |x / scale| <= F, so nothing overflows)
    back  = (x8.float() * scale).to(x.dtype)
A row is rounded the same way whichever rank holds it, and every element of an exchanged tensor is rounded
(also the part a rank keeps for itself), so the result does not depend on the number of ranks: it equals one
process in which the same tensors are rounded at the same points (`round_trip`).

Wire format of an fp8 tensor (`pack`): uint8 (..., head_dim + 4), each row's fp8 bytes followed by the 4 bytes
of its fp32 scale. One tensor per exchange, so the scales need no collective of their own, and the transports
(gloo, the shared-memory all-to-all) move it as bytes (gloo has no fp8 type). Per element that is
1 + 4 / head_dim bytes: the payload's element size plus 4 bytes per (token, head).
"""

from __future__ import annotations

import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
CAST_DTYPES = (torch.bfloat16, torch.float16)
COMM_DTYPES = CAST_DTYPES + FP8_DTYPES
SCALE_BYTES = 4  # one float32 per (token, head) row
KEY_DTYPE = torch.bfloat16  # what keys travel in under fp8 communication unless comm_fp8_keys


def normalize_comm_dtype(comm_dtype, comm_fp8_keys) -> torch.dtype | None:
    """Check the config's two fields; returns `comm_dtype` as a torch.dtype (a name such as "bfloat16" or
    "float8_e4m3fn" is accepted too).

    Raises:
        ValueError / TypeError: an unsupported dtype, or `comm_fp8_keys=True` without an fp8 `comm_dtype`.
    """
    if isinstance(comm_dtype, str):
        resolved = getattr(torch, comm_dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"Unknown `comm_dtype` {comm_dtype!r}; choose one of {_names(COMM_DTYPES)} or None.")
        comm_dtype = resolved
    if comm_dtype is not None and comm_dtype not in COMM_DTYPES:
        raise ValueError(
            f"`comm_dtype`={comm_dtype} is not supported; choose None (the tensors' own dtype), "
            f"{_names(CAST_DTYPES)} (a plain cast) or {_names(FP8_DTYPES)} (fp8 with a scale per token and head)."
        )
    if not isinstance(comm_fp8_keys, bool):
        raise TypeError(f"`comm_fp8_keys` must be a bool, got {type(comm_fp8_keys).__name__}.")
    if comm_fp8_keys and comm_dtype not in FP8_DTYPES:
        raise ValueError(
            f"`comm_fp8_keys=True` sends keys in fp8, which needs an fp8 `comm_dtype` ({_names(FP8_DTYPES)}); "
            f"got comm_dtype={comm_dtype}."
        )
    return comm_dtype


def _names(dtypes) -> str:
    return ", ".join(f"torch.{str(d).removeprefix('torch.')}" for d in dtypes)


def travel_dtype(
    comm_dtype: torch.dtype | None, dtype: torch.dtype, *, key: bool = False, fp8_keys: bool = False
) -> torch.dtype | None:
    """The dtype a tensor of `dtype` travels in, or None when it travels as it is.

    Args:
        comm_dtype: the config's `comm_dtype`.
        dtype: the tensor's own dtype.
        key: the tensor holds attention keys (bf16 under fp8 communication unless `fp8_keys`).
        fp8_keys: the config's `comm_fp8_keys`.
    """
    if comm_dtype is None:
        return None
    if comm_dtype in FP8_DTYPES and key and not fp8_keys:
        comm_dtype = KEY_DTYPE
    if comm_dtype in FP8_DTYPES:
        return comm_dtype
    # A plain cast only where it narrows: a tensor no wider than comm_dtype keeps its own dtype.
    return comm_dtype if torch.finfo(comm_dtype).bits < torch.finfo(dtype).bits else None


def fp8_scale(x: torch.Tensor, fp8: torch.dtype) -> torch.Tensor:
    """float32 (..., 1): `amax(|x.float()|)` over the last dim / `torch.finfo(fp8).max`; 1 for a row of zeros."""
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    scale = amax / torch.finfo(fp8).max
    return torch.where(amax == 0, torch.ones_like(scale), scale)


def quantize_fp8(x: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(x8 in `fp8`, float32 scale (..., 1)) with `x8 = (x.float() / scale).to(fp8)`."""
    scale = fp8_scale(x, fp8)
    return (x.float() / scale).to(fp8), scale


def dequantize_fp8(x8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(x8.float() * scale).to(dtype)`."""
    return (x8.float() * scale).to(dtype)


def pack(x: torch.Tensor, travel: torch.dtype | None) -> torch.Tensor:
    """`x` in its wire form: itself (`travel` None), cast (bf16 / fp16), or fp8 bytes and scale per row (uint8
    (..., head_dim + 4), see the module docstring)."""
    if travel is None:
        return x
    if travel not in FP8_DTYPES:
        return x.to(travel)
    x8, scale = quantize_fp8(x, travel)
    # The scale's 4 bytes after its row's head_dim bytes: it travels with its row through any row split.
    return torch.cat([x8.view(torch.uint8), scale.view(torch.uint8)], dim=-1)


def unpack(p: torch.Tensor, travel: torch.dtype | None, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of `pack`: the received wire form back in `dtype` (the sender's tensor rounded by `travel`)."""
    if travel is None:
        return p
    if travel not in FP8_DTYPES:
        return p.to(dtype)
    d = p.shape[-1] - SCALE_BYTES
    scale = p[..., d:].contiguous().view(torch.float32)
    return dequantize_fp8(p[..., :d].view(travel), scale, dtype)


def round_trip(x: torch.Tensor, travel: torch.dtype | None) -> torch.Tensor:
    """What `x` is after travelling in `travel`: `unpack(pack(x))`, in x's dtype. The one-process reference."""
    return unpack(pack(x, travel), travel, x.dtype)


def wire_bytes_per_row(head_dim: int, dtype: torch.dtype, travel: torch.dtype | None) -> int:
    """Bytes one (token, head) row of `head_dim` values of `dtype` takes on the wire (for byte formulas)."""
    if travel is None:
        return head_dim * dtype.itemsize
    if travel in FP8_DTYPES:
        return head_dim * travel.itemsize + SCALE_BYTES
    return head_dim * travel.itemsize

"""Key-padding masks in one canonical form: an additive float32 bias of shape (b, S_kv), b in {1, B}.

A bias row follows its keys: Ulysses gathers it along keys, ring attention rotates (or gathers) it with
its key/value block, so every block is attended with the mask of *that* block.
"""

from __future__ import annotations

import torch


def _holds(condition: torch.Tensor, message: str) -> bool:
    """Whether a condition on a mask's values holds: its value in eager code. Under torch.compile a graph
    cannot branch on tensor values, so the condition is assumed (the mask's shape admits only that reading)
    and checked when the graph runs: `torch._assert_async` raises there, on every rank alike."""
    if torch.compiler.is_compiling():
        torch._assert_async(condition, message)
        return True
    return bool(condition)


def key_bias_from_mask(mask: torch.Tensor | None, batch: int, kv_len: int) -> torch.Tensor | None:
    """Convert a user mask for the local keys to an additive float32 bias of shape (b, kv_len).

    Accepted: boolean (B, S_kv) (True = attend), or boolean / additive masks broadcastable to
    (B, 1, 1, S_kv), or a (B, H, 1, S_kv) mask whose heads are all equal (processors that repeat a
    key-padding mask over heads, like LTX's; checked on every call). A mask that varies along queries or
    heads cannot be split with the keys of a local shard and is refused.

    Raises:
        ValueError: the mask has another shape.
        TypeError: the mask is neither boolean nor floating point.
    """
    if mask is None:
        return None
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"attn_mask must be boolean (True = attend) or an additive float mask, got {mask.dtype}.")
    shape = tuple(mask.shape)
    expected = f"(batch={batch}, local_kv_seq={kv_len}) or broadcastable to (batch, 1, 1, local_kv_seq)"
    if mask.dim() == 2 and shape[0] in (1, batch) and shape[1] == kv_len:
        rows = mask
    elif mask.dim() in (1, 3, 4) and shape[-1] == kv_len:
        lead = shape[:-1]
        if mask.dim() == 4:
            if shape[0] not in (1, batch):
                raise ValueError(f"attn_mask of shape {shape} has batch {shape[0]}; expected {expected}.")
            if shape[1] > 1 and shape[2] == 1 and _holds(
                    (mask == mask[:, :1]).all(),
                    f"cp_hooks: an attn_mask of shape {shape} must be a key-padding mask repeated over heads"):
                mask, shape = mask[:, :1], (shape[0], 1, 1, kv_len)  # a key-padding mask repeated over heads
            lead = shape[1:-1]
        if any(s != 1 for s in lead):
            raise ValueError(
                f"attn_mask of shape {shape} varies along queries or heads. Context parallelism splits queries "
                f"and keys across ranks, so only key-padding masks are supported: {expected}."
            )
        rows = mask.reshape(shape[0] if mask.dim() == 4 else 1, kv_len)
    else:
        raise ValueError(f"attn_mask has shape {shape}; expected {expected}.")
    if rows.dtype == torch.bool:
        return torch.zeros(rows.shape, dtype=torch.float32, device=rows.device).masked_fill_(~rows, float("-inf"))
    return rows.detach().to(torch.float32)


def split_symmetric_mask(mask: torch.Tensor, q_len: int, kv_len: int):
    """Split a self-attention mask `v[q] & v[k]` into its key-padding mask and the query rows to zero.

    Some processors (HunyuanVideo 1.5's) turn a token-validity vector v into a boolean (B, 1, S, S) mask
    allowing query q to see key k when both are valid. Its diagonal is v itself, so each rank can read the
    validity of its own keys even when none of its queries is valid; keys then follow their blocks like
    any key-padding mask, and the rows of invalid queries (which see no key) are set to zero, as SDPA does.

    Returns:
        (key mask (B, h, 1, S), query validity (B, S)) if `mask` has that form, else None.
    """
    if mask.dtype != torch.bool or mask.dim() != 4 or q_len != kv_len or tuple(mask.shape[-2:]) != (q_len, kv_len):
        return None
    valid = mask.diagonal(dim1=-2, dim2=-1)  # (B, h, S)
    if not _holds((mask == (valid[..., :, None] & valid[..., None, :])).all(),
                  f"cp_hooks: a boolean attn_mask of shape {tuple(mask.shape)} must be v[q] & v[k] (a token-validity "
                  "vector on both sides); other masks that vary along queries are not supported"):
        return None
    return valid[..., None, :], valid[:, 0]


def rows_with_keys(bias: torch.Tensor | None) -> torch.Tensor | None:
    """(b,) boolean: True where at least one key of the block is attendable (else the block adds nothing)."""
    if bias is None:
        return None
    return (bias > float("-inf")).any(dim=-1)

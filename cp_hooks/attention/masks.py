"""Attention masks in two canonical forms (b in {1, B}):

* a key bias (b, S_kv) for key-padding masks, additive float32. A bias row follows its keys: Ulysses
  gathers it along keys, ring attention rotates (or gathers) it with its key/value block, so every block
  is attended with the mask of *that* block.
* a row bias (b, Sq, S_kv_whole), boolean (True = attend) or additive float32, for a query x key mask that
  every rank holds for the whole sequence (block-causal, segment masks built in `forward` before the
  split): each rank keeps the rows of the queries its attention kernel computes and every key's column;
  a key block takes its own columns. Nothing of it travels (docs/architecture.md, "Masks").
"""

from __future__ import annotations

import torch

from cp_hooks.forward import value_checks


def _holds(condition: torch.Tensor, message: str) -> bool:
    """Whether a condition on a mask's values holds (see `cp_hooks.value_checks`: within an enabled forward a
    failure is raised at the forward's end on every rank; under torch.compile it is asserted when the graph
    runs)."""
    return value_checks.holds(condition, message)


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
            if (
                shape[1] > 1
                and shape[2] == 1
                and _holds(
                    (mask == mask[:, :1]).all(),
                    f"cp_hooks: an attn_mask of shape {shape} must be a key-padding mask repeated over heads",
                )
            ):
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
    if not _holds(
        (mask == (valid[..., :, None] & valid[..., None, :])).all(),
        f"cp_hooks: a boolean attn_mask of shape {tuple(mask.shape)} must be v[q] & v[k] (a token-validity "
        "vector on both sides); other masks that vary along queries are not supported",
    ):
        return None
    return valid[..., None, :], valid[:, 0]


def is_whole_mask(mask: torch.Tensor | None, q_len: int, kv_len: int, world: int) -> bool:
    """Whether `mask` is a query x key mask over the whole sequence rather than the local shards.

    A 4-D mask with more than one query row whose last two dims are not the local (q_len, kv_len): with
    more than one rank, the local shards are shorter than the whole sequence. Its shape is checked against
    the whole lengths by `whole_mask_rows`.
    """
    return (
        mask is not None
        and world > 1
        and mask.dim() == 4
        and mask.shape[-2] > 1
        and tuple(mask.shape[-2:]) != (q_len, kv_len)
    )


def whole_mask_rows(mask: torch.Tensor, batch: int, q_total: int, kv_total: int, row_start: int, rows: int):
    """The row bias (b, rows, kv_total) of queries row_start .. row_start + rows of a whole-sequence mask
    (boolean stays boolean, additive becomes float32).

    Args:
        mask: boolean (True = attend) or additive, (b, 1 or heads, q_total, kv_total), the same on every rank.
        batch: the query batch size.
        q_total, kv_total: the whole sequence's query and key lengths (every rank's lengths summed).
        row_start, rows: the queries this rank's attention kernel computes, in whole-sequence order.

    Raises:
        ValueError: the mask's shape is neither the local nor the whole sequence's, or it varies over heads.
        TypeError: the mask is neither boolean nor floating point.
    """
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"attn_mask must be boolean (True = attend) or an additive float mask, got {mask.dtype}.")
    shape = tuple(mask.shape)
    if shape[-2:] != (q_total, kv_total) or shape[0] not in (1, batch):
        raise ValueError(
            f"attn_mask has shape {shape}: a mask that varies along queries must cover the whole sequence, "
            f"(batch={batch} or 1, 1, {q_total}, {kv_total}), every rank holding all of it (build it before the "
            "plan's split); a mask over the local shards can only be a key-padding mask, (batch, 1, 1, local_kv)."
        )
    if shape[1] > 1:
        if not _holds(
            (mask == mask[:, :1]).all(),
            f"cp_hooks: a whole-sequence attn_mask of shape {shape} must be the same for every head",
        ):
            raise ValueError(
                f"attn_mask of shape {shape} differs between heads; only masks shared by all heads "
                "(dim 1 of size 1) are supported over the whole sequence."
            )
    rows_of_mask = mask[:, 0, row_start : row_start + rows, :]
    # A boolean mask stays boolean (a quarter of float32's bytes, kept for the backward too); each key block
    # turns its columns into an additive bias when it is attended (`kernel_mask`).
    return rows_of_mask if rows_of_mask.dtype == torch.bool else rows_of_mask.detach().to(torch.float32)


def key_columns(bias: torch.Tensor | None, start: int, length: int) -> torch.Tensor | None:
    """The bias a key block of `length` keys starting at `start` (whole-sequence order) is attended with:
    a row bias's columns of those keys; a key bias already is the block's own (it travels with it)."""
    if bias is None or bias.dim() == 2:
        return bias
    return bias.narrow(2, start, length)


def kernel_mask(bias: torch.Tensor) -> torch.Tensor:
    """A bias as an additive attn_mask (b, 1, 1 or Sq, Sk): broadcast over heads, and over queries for key
    biases; a boolean row bias (True = attend) becomes 0 / -inf here, one block at a time."""
    if bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device).masked_fill_(~bias, float("-inf"))
    return bias[:, None, None, :] if bias.dim() == 2 else bias[:, None]


def rows_with_keys(bias: torch.Tensor | None) -> torch.Tensor | None:
    """True where at least one key of the block is attendable (else the block adds nothing to that row):
    (b,) for a key bias, (b, Sq) for a row bias."""
    if bias is None:
        return None
    return (bias if bias.dtype == torch.bool else bias > float("-inf")).any(dim=-1)


class SameInputsMemo:
    """The value last built from the same arguments, built again otherwise.

    A plan's attention processor (`ContextParallelProcessor`) builds the same whole-sequence mask in every layer
    of a forward, from objects that `forward` computes once and hands to every layer: built once per forward
    instead of once per layer. Tensors are compared by identity (the memo holds them, so an identity is never
    reused by another tensor meanwhile), everything else by equality.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value = None

    def get(self, key: tuple, build):
        """The value for `key`: the last one if `key` matches the last key, else `build()`."""
        last = self._key
        if (
            last is None
            or len(last) != len(key)
            or not all(
                a is b or (not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b)
                for a, b in zip(key, last)
            )
        ):
            self._value, self._key = build(), key
        return self._value

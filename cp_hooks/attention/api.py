"""`context_parallel_attention`: validate, then run Ulysses, ring, or both (hybrid) over the config's mesh."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cp_hooks import comm
from cp_hooks.attention import ops
from cp_hooks.attention.masks import is_whole_mask, key_bias_from_mask, split_symmetric_mask, whole_mask_rows
from cp_hooks.config import ContextParallelConfig
from cp_hooks.forward import context as routing
from cp_hooks.forward.length_memo import conform
from cp_hooks.runtime import ContextParallelRuntime


def context_parallel_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    config: ContextParallelConfig,
) -> torch.Tensor:
    """Exact attention over the whole sequence, from this rank's shard of queries, keys and values.

    Args:
        query: (batch, local_seq, heads, head_dim); rank r holds piece r of the sequence.
        key: (batch, local_kv_seq, heads, head_dim), this rank's piece of the keys.
        value: (batch, local_kv_seq, heads, head_dim), this rank's piece of the values.
        attn_mask: key-padding mask for the *local* keys: boolean (batch, local_kv_seq) with True = attend,
            or boolean/additive broadcastable to (batch, 1, 1, local_kv_seq); or a query x key mask over the
            *whole* sequence, (batch or 1, 1, whole_q_seq, whole_kv_seq), the same on every rank (a
            block-causal or segment mask built before the plan's split).
        dropout_p: attention dropout; only with pure Ulysses (ring attention refuses it).
        is_causal: causal attention in global sequence order.
        scale: softmax scale, default 1/sqrt(head_dim).
        config: a set-up `ContextParallelConfig` (see `config.setup()`), or its `config.runtime`.

    Returns:
        (batch, local_seq, heads, head_dim): this rank's queries attended over every rank's keys.

    Raises:
        ValueError / TypeError: bad shapes, dtypes, devices or masks, or sizes the mode cannot handle
            without an anything flag — raised before any communication.

    Example:
        >>> config = ContextParallelConfig(ulysses_degree=2).setup()
        >>> out = context_parallel_attention(q_local, k_local, v_local, config=config)
    """
    runtime = _runtime_of(config)
    query_valid = whole = None
    if is_whole_mask(attn_mask, query.shape[1], key.shape[1], runtime.world_size):
        whole, attn_mask = attn_mask, None  # a query x key mask over the whole sequence (masks.py)
    elif attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[-2] > 1:
        # A local mask that varies along queries is refused, unless it is a padding mask applied to both sides.
        symmetric = split_symmetric_mask(attn_mask, query.shape[1], key.shape[1])
        if symmetric is not None:
            attn_mask, query_valid = symmetric
    bias = _validate(query, key, value, attn_mask, dropout_p, is_causal, runtime)
    if whole is not None and (is_causal or dropout_p):
        raise ValueError("A whole-sequence attn_mask takes neither is_causal nor attention dropout.")
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    # Every rank's lengths: from here on every rank has them, so a mask error below is raised on all alike.
    q_len = query.shape[1]
    q_sizes, kv_sizes = _sizes(q_len, key.shape[1], runtime, query.device)
    mismatch = (
        runtime.anything
        and not torch.compiler.is_compiling()
        and (q_sizes[runtime.rank] != q_len or kv_sizes[runtime.rank] != key.shape[1])
    )
    if mismatch:
        # Remembered lengths this rank's do not match (recorded; every rank raises at the forward's end): take
        # part in the collectives with the lengths the peers expect (cp_hooks.length_memo).
        query, query_valid = conform(query, q_sizes[runtime.rank], 1), None
        key, value = (conform(t, kv_sizes[runtime.rank], 1) for t in (key, value))
        bias = conform(bias, kv_sizes[runtime.rank], 1) if bias is not None and bias.dim() == 2 else bias
    if whole is not None:
        bias = _kernel_rows(whole, query.shape[0], q_sizes, kv_sizes, runtime)
    with routing.inside_cp_kernel():
        if dropout_p:
            out = _ulysses_with_dropout(
                query, key, value, bias, dropout_p, is_causal, scale, runtime, q_sizes, kv_sizes
            )
        else:
            out = ops.attention(query, key, value, bias, runtime, q_sizes, kv_sizes, scale, is_causal)
    if query_valid is not None:
        out = out * query_valid[:, :, None, None].to(out.dtype)  # queries that see no key: zero, as SDPA gives
    return conform(out, q_len, 1) if mismatch else out


def _kernel_rows(mask, batch, q_sizes, kv_sizes, runtime):
    """The rows of a whole-sequence mask for the queries this rank's attention kernel computes: with Ulysses
    those of its whole Ulysses group (the group's shards are consecutive in the sequence), else its own."""
    u = runtime.ulysses_degree
    first = runtime.ring_rank * u
    return whole_mask_rows(
        mask, batch, sum(q_sizes), sum(kv_sizes), sum(q_sizes[:first]), sum(q_sizes[first : first + u])
    )


def _runtime_of(config):
    """The bound runtime of a set-up config (or the runtime itself)."""
    return config if isinstance(config, ContextParallelRuntime) else config.runtime


def _sizes(q_len: int, kv_len: int, runtime, device) -> tuple[list[int], list[int]]:
    """Every rank's (query, key) lengths in the flattened mesh.

    Equal without an anything flag. Otherwise, in eager code, exchanged (one tiny all-gather) in the first
    forward of the model's input shapes and remembered by the call's position for later forwards
    (`cp_hooks.length_memo`); a call outside an enabled forward exchanges them every time. Eager code does
    not derive them from the splits: a rank whose length happens to match a split while a peer's does not
    would skip the exchange its peer enters, and both would hang. Inside a compiled graph a shape cannot
    come from a collective: there they are derived from the plan's splits of this forward (`cp_hooks.lengths`,
    docs/architecture.md "Per-rank lengths").
    """
    world = runtime.world_size
    if not runtime.anything:
        return [q_len] * world, [kv_len] * world
    if not torch.compiler.is_compiling():
        q_sizes, kv_sizes = runtime.length_memo.lengths(
            (q_len, kv_len),
            runtime.split_lengths.state(),
            runtime.rank,
            lambda: comm.exchange_sizes([q_len, kv_len], runtime.flat_group, device),
        )
        return q_sizes, kv_sizes
    q_sizes = runtime.split_lengths.sizes(q_len, world, runtime.rank)
    kv_sizes = q_sizes if kv_len == q_len else runtime.split_lengths.sizes(kv_len, world, runtime.rank)
    if q_sizes is None or kv_sizes is None:
        raise RuntimeError(
            f"Under torch.compile, uneven shards need every rank's length from the plan's splits, and the local "
            f"lengths ({q_len}, {kv_len}) do not follow from them unambiguously. Compile the repeated blocks instead "
            "(model.compile_repeated_blocks), or use lengths that the degrees divide."
        )
    return q_sizes, kv_sizes


def _ulysses_with_dropout(query, key, value, bias, dropout_p, is_causal, scale, runtime, q_sizes, kv_sizes):
    """Pure Ulysses with attention dropout (eager, autograd through the all-to-alls): torch's SDPA draws the
    dropout mask, which the registered operators cannot replay in a backward."""
    heads = query.shape[2]
    q, k, v, b = ops._to_heads(runtime, query, key, value, bias, q_sizes, kv_sizes, reuse_buffer=False)
    mask = None if b is None else b[:, None, None, :].to(q.dtype)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
    )
    return ops._from_heads(runtime, out.transpose(1, 2), q_sizes, heads)


def _validate(query, key, value, attn_mask, dropout_p, is_causal, runtime):
    """Every check that needs no communication; returns the canonical key bias."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D (batch, local_seq, heads, head_dim), got shape {tuple(t.shape)}. "
                "(SDPA's layout is (batch, heads, seq, head_dim): transpose(1, 2) first.)"
            )
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"query, key and value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}.")
    if not query.is_floating_point():
        raise TypeError(f"attention needs floating-point inputs, got {query.dtype}.")
    if not (query.device == key.device == value.device):
        raise ValueError(
            f"query, key and value are on different devices: {query.device}, {key.device}, {value.device}."
        )
    if query.device.type != runtime.device_type:
        raise ValueError(
            f"Inputs are on {query.device} but the context-parallel mesh communicates on '{runtime.device_type}' "
            f"({'gloo' if runtime.device_type == 'cpu' else 'nccl'}). Move the model and inputs to that device, or "
            "initialise the process group with a backend for this device."
        )
    b, sq, h, d = query.shape
    if key.shape != value.shape:
        raise ValueError(f"key and value shapes differ: {tuple(key.shape)} vs {tuple(value.shape)}.")
    if key.shape[0] != b or key.shape[3] != d:
        raise ValueError(
            f"key/value shape {tuple(key.shape)} does not match query {tuple(query.shape)} in batch or head_dim."
        )
    if key.shape[2] != h:
        raise ValueError(
            f"query has {h} heads but key/value have {key.shape[2]}; grouped-query attention is not supported yet: "
            "repeat the key/value heads (repeat_interleave on dim 2) before calling."
        )
    if dropout_p and runtime.ring_degree > 1:
        raise ValueError(
            "Ring attention cannot apply attention dropout; use dropout_p=0.0 (inference) or pure Ulysses."
        )
    if dropout_p and runtime.comm_dtype is not None:
        # Dropout runs outside the registered operators, with autograd through the all-to-alls, which a wire
        # form (fp8 bytes) cannot carry.
        raise ValueError(
            f"Attention dropout with comm_dtype={runtime.comm_dtype} is not supported; use dropout_p=0.0 "
            "or comm_dtype=None."
        )
    if is_causal and attn_mask is not None:
        raise ValueError("Pass either attn_mask or is_causal=True, not both (as torch's SDPA).")
    if is_causal and key.shape[1] != sq:
        raise ValueError("is_causal needs the same local query and key lengths (self-attention).")
    u = runtime.ulysses_degree
    if u > 1 and h % u and not runtime.ulysses_anything:
        raise ValueError(
            f"{h} heads are not divisible by ulysses_degree={u}. Set ContextParallelConfig(ulysses_anything=True) "
            "to pad heads, or choose a ulysses_degree that divides the head count."
        )
    return key_bias_from_mask(attn_mask, b, key.shape[1])

"""Ring attention: queries stay, key/value blocks visit every rank of the ring group, partials are merged.

Two ways to move the blocks (`rotate_method`):
  * "alltoall" — a true ring. At each step a rank posts the send of its current block to the next rank
    and the receive of the next block from the previous one, computes on the current block while they
    travel, then merges. It holds its own block plus at most two in flight. The backward passes the
    dK/dV accumulators around the ring with the blocks, and one last hop brings each home.
  * "allgather" — one all-gather of every block, then the same loop (same block order, so the two
    methods give identical results). The backward re-gathers and returns each block's dK/dV with one
    all-to-all.

A key-padding bias travels with its block, so every block is masked by its own keys; a row bias (a
whole-sequence query x key mask, `masks.whole_mask_rows`) stays, and each block takes its columns of it.
Block order on rank
r: step s works on the block of rank (r - s) mod N. With `is_causal`, blocks of later ranks are skipped
and the own block is causal (queries and keys of a rank are the same contiguous slice of the sequence).
"""

from __future__ import annotations

import torch

from cp_hooks import comm
from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward
from cp_hooks.attention.masks import key_columns
from cp_hooks.attention.merge import merge_partial_
from cp_hooks.comm import precision


def _block_kind(src: int, rank: int, is_causal: bool) -> str:
    if not is_causal or src < rank:
        return "full"
    return "causal" if src == rank else "skip"


def _kv_shape(k: torch.Tensor, length: int) -> torch.Size:
    return torch.Size((k.shape[0], length) + tuple(k.shape[2:]))


def _block_tensors(k, v, bias):
    return [k, v] if bias is None else [k, v, bias]


def _payloads(bias):
    # Labels for comm_stats(): the key bias is counted apart from the K/V data of the formulas in docs/architecture.md.
    return ["attention", "attention"] if bias is None else ["attention", "attention", "mask"]


def _recv_shapes(k, v, bias, length):
    # K and V shapes apart: in their wire forms they may differ (bf16 keys beside fp8 values with scales).
    shapes = [_kv_shape(k, length), _kv_shape(v, length)]
    if bias is not None:
        shapes.append(torch.Size((bias.shape[0], length)))
    return shapes


def _iter_blocks(k, v, bias, kv_sizes, group, rotate_method):
    """Yield (src, k, v, bias) for every block in ring order; overlaps the transfer of the next block.

    A key bias travels with its block; a row bias stays, and each block gets its own columns of it.
    """
    if bias is not None and bias.dim() == 3:
        offsets = [sum(kv_sizes[:i]) for i in range(len(kv_sizes))]
        for src, kb, vb, _ in _iter_blocks(k, v, None, kv_sizes, group, rotate_method):
            yield src, kb, vb, key_columns(bias, offsets[src], kv_sizes[src])
        return
    world, rank = comm.group_size(group), comm.group_rank(group)
    if rotate_method == "allgather":
        full = [
            comm.all_gather(t, kv_sizes, group, dim=1, payload=p)
            for t, p in zip(_block_tensors(k, v, bias), _payloads(bias))
        ]
        offsets = [sum(kv_sizes[:i]) for i in range(world)]
        for step in range(world):
            src = (rank - step) % world
            pieces = [t.narrow(1, offsets[src], kv_sizes[src]) for t in full]
            yield src, pieces[0], pieces[1], pieces[2] if bias is not None else None
        return
    exchange = comm.RingExchange(group)
    current = _block_tensors(k, v, bias)
    for step in range(world):
        src = (rank - step) % world
        if step + 1 < world:
            exchange.start(current, _recv_shapes(k, v, bias, kv_sizes[(src - 1) % world]), _payloads(bias))
        yield src, current[0], current[1], current[2] if bias is not None else None
        if step + 1 < world:
            current = exchange.wait()


def _wire(k, v, travel):
    """K and V in their wire form (`cp_hooks.comm.precision.pack`; `travel` = (keys' dtype, values')).

    Packed once, the own block included (every block is computed from rounded K/V, so the result does not
    depend on which rank held a block); the blocks then move around the ring, or are gathered, in that form
    and are unpacked only to be computed on. None: they travel as they are.
    """
    return precision.pack(k, travel[0]), precision.pack(v, travel[1])


def _unwire(kb, vb, travel, dtype):
    return precision.unpack(kb, travel[0], dtype), precision.unpack(vb, travel[1], dtype)


def ring_forward(
    q, k, v, bias, *, group, kv_sizes, rotate_method, scale, is_causal, convert_to_fp32, travel=(None, None)
):
    """Forward pass; returns (out (B, Sq, H, D) in q's dtype, lse (B, H, Sq) float32).

    `travel`: the dtypes K and V travel in (`comm_dtype`, `cp_hooks.comm.precision.travel_dtype`).
    """
    rank = comm.group_rank(group)
    acc_dtype = torch.promote_types(q.dtype, torch.float32) if convert_to_fp32 else q.dtype
    out = lse = None
    k, v = _wire(k, v, travel)
    for src, kb, vb, bb in _iter_blocks(k, v, bias, kv_sizes, group, rotate_method):
        kind = _block_kind(src, rank, is_causal)
        if kind != "skip":
            kb, vb = _unwire(kb, vb, travel, q.dtype)
            block_out, block_lse = attention_with_lse(q, kb, vb, bb, scale=scale, is_causal=kind == "causal")
            if out is None:
                # The first block is the running result as it is: no zero-filled accumulator, no merge.
                out, lse = block_out.to(acc_dtype), block_lse
            else:
                out, lse = merge_partial_(out, lse, block_out, block_lse)
            del block_out
        # Drop this block before the generator receives the next one: with rotate_method="alltoall" the
        # rank then holds the block being computed and the one in flight, never a third.
        del kb, vb, bb
    if out is None:  # only when every block is skipped, which causal order never does; kept for safety
        out = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
        lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"), dtype=torch.float32, device=q.device)
    return out.to(q.dtype), lse


def ring_backward(
    dout,
    q,
    k,
    v,
    bias,
    out,
    lse,
    *,
    group,
    kv_sizes,
    rotate_method,
    scale,
    is_causal,
    convert_to_fp32,
    travel=(None, None),
):
    """Backward pass; returns (dq, dk, dv) for this rank's q, k, v.

    With a `travel` precision the K/V blocks move as in the forward (the same rounded values, the same
    bytes); the dK/dV accumulators travel in their own precision. The gradient of the rounding is taken as
    the identity (straight-through): dK of the rounded block is the dK of the rank's k.
    """
    world, rank = comm.group_size(group), comm.group_rank(group)
    acc_dtype = torch.promote_types(q.dtype, torch.float32) if convert_to_fp32 else q.dtype
    dq = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
    k_shape = k.shape[2:]
    k, v = _wire(k, v, travel)

    def block_grads(src, kb, vb, bb):
        kind = _block_kind(src, rank, is_causal)
        shape = kb.shape[:2] + k_shape  # the block's K/V shape (kb may be its wire form)
        if kind == "skip":
            zeros = torch.zeros(shape, dtype=acc_dtype, device=q.device)
            return None, zeros, zeros.clone()
        kb, vb = _unwire(kb, vb, travel, q.dtype)
        gq, gk, gv = attention_with_lse_backward(dout, q, kb, vb, out, lse, bb, scale=scale, is_causal=kind == "causal")
        return gq, gk.to(acc_dtype), gv.to(acc_dtype)

    if rotate_method == "allgather":
        dk_blocks, dv_blocks = [None] * world, [None] * world
        for src, kb, vb, bb in _iter_blocks(k, v, bias, kv_sizes, group, rotate_method):
            gq, dk_blocks[src], dv_blocks[src] = block_grads(src, kb, vb, bb)
            if gq is not None:
                dq += gq
        # Block j's gradient goes home to rank j, where the N contributions are summed.
        own = kv_sizes[rank]
        dkv = torch.stack([torch.cat(dk_blocks, dim=1), torch.cat(dv_blocks, dim=1)])  # (2, B, Sk_total, H, D)
        rows = comm.all_to_all(dkv.movedim(2, 0), kv_sizes, [own] * world, group)  # (world*own, 2, B, H, D)
        summed = rows.view(world, own, *rows.shape[1:]).sum(0).movedim(0, 2)  # (2, B, own, H, D)
        return dq.to(q.dtype), summed[0].to(q.dtype), summed[1].to(q.dtype)  # k, v may be wire forms now

    kv_exchange, grad_exchange = comm.RingExchange(group), comm.RingExchange(group)
    rows = bias if bias is not None and bias.dim() == 3 else None  # a row bias stays (see _iter_blocks)
    bias = None if rows is not None else bias
    offsets = [sum(kv_sizes[:i]) for i in range(world)]
    current = _block_tensors(k, v, bias)
    carried = None
    for step in range(world):
        src = (rank - step) % world
        nxt = (src - 1) % world
        if step + 1 < world:
            kv_exchange.start(current, _recv_shapes(k, v, bias, kv_sizes[nxt]))
        block_bias = current[2] if bias is not None else key_columns(rows, offsets[src], kv_sizes[src])
        gq, gk, gv = block_grads(src, current[0], current[1], block_bias)
        if gq is not None:
            dq += gq
        if carried is not None:
            # The accumulator of block `src`, summed by the ranks that held it before us.
            received = grad_exchange.wait()
            gk, gv = received[0] + gk, received[1] + gv
        # Pass it on; after the last step the next rank is the block's owner.
        grad_exchange.start([gk, gv], [_kv_shape(gk, kv_sizes[nxt])] * 2)
        carried = True
        if step + 1 < world:
            current = kv_exchange.wait()
    dk, dv = grad_exchange.wait()
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype)  # q, k and v share a dtype (api._validate)

"""Ulysses attention: trade the sequence split for a head split with all-to-all, attend, trade back.

Rank j of a Ulysses group of N starts with its sequence shard of every head (B, S_j, H, D). After the
all-to-all it holds the whole group's sequence for heads chunk j (B, sum S, H/N, D), so attention over
that sequence is exact. A second all-to-all returns the output to the sequence split. Key-padding biases
are all-gathered along keys. With uneven shards the sizes are exchanged each call; a head count N does
not divide is padded with zero heads that are sliced off again (`ulysses_anything`).
"""

from __future__ import annotations

import torch

from cp_hooks import comm


def seq_to_heads(x: torch.Tensor, group, seq_sizes: list[int], send: torch.Tensor | None = None):
    """(B, S_local, H, D) -> (B, sum(seq_sizes), H / N, D); H must be divisible by N (pad first).

    Returns (result, send buffer). `send`, the buffer a previous call returned, is reused when its size
    fits: the all-to-all has finished reading it when it returns. Only without autograd (the buffer would
    be overwritten in place in the graph). Through shared memory there is no send buffer (`comm.all_to_all_views`).
    """
    world = comm.group_size(group)
    b, s, h, d = x.shape
    # Row j of the send buffer goes to rank j: (N, S_local, B, H/N, D), rows flattened over (N, S_local).
    rows = x.reshape(b, s, world, h // world, d).permute(2, 1, 0, 3, 4)
    if not (torch.is_grad_enabled() and x.requires_grad) and comm.shares_memory(group, x):
        # Through shared memory, rank j's heads go from x into the shared buffer directly: no send buffer.
        recv = x.new_empty((sum(seq_sizes), b, h // world, d))
        if comm.all_to_all_views(rows.unbind(0), recv, seq_sizes, group):
            return recv.permute(1, 0, 2, 3), send
    if send is None or send.numel() != x.numel() or send.dtype != x.dtype:
        # A buffer of its own (never a view of x, as a reshape can be for one token): it may be reused.
        send = x.new_empty((world * s, b, h // world, d))
    send = send.view(world * s, b, h // world, d)
    send.view(rows.shape).copy_(rows)
    recv = comm.differentiable_all_to_all(send, [s] * world, seq_sizes, group)  # (sum S, B, H/N, D), in rank order
    return recv.permute(1, 0, 2, 3), send


def heads_to_seq(x: torch.Tensor, group, seq_sizes: list[int]) -> torch.Tensor:
    """Inverse of `seq_to_heads`: (B, sum(seq_sizes), H / N, D) -> (B, S_local, H, D)."""
    world, rank = comm.group_size(group), comm.group_rank(group)
    b, _, hc, d = x.shape
    s = seq_sizes[rank]
    send = x.permute(1, 0, 2, 3)  # (sum S, B, H/N, D): rows of rank j's shard go back to rank j
    if not (torch.is_grad_enabled() and x.requires_grad) and comm.shares_memory(group, x):
        # Through shared memory, each peer's heads land in their place of the result: no unpacking copy.
        out = x.new_empty((b, s, world * hc, d))
        places = out.view(b, s, world, hc, d).permute(2, 1, 0, 3, 4)  # (N, S_local, B, H/N, D): rank j's heads
        if comm.all_to_all_views(send.split_with_sizes(seq_sizes), places, [1] * world, group):
            return out
    recv = comm.differentiable_all_to_all(send, seq_sizes, [s] * world, group)  # (N * S_local, B, H/N, D)
    return recv.reshape(world, s, b, hc, d).permute(2, 1, 0, 3, 4).reshape(b, s, world * hc, d)


def pad_heads(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Append zero heads (dim 2) up to a multiple of `multiple`."""
    extra = -x.shape[2] % multiple
    if extra == 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], extra, x.shape[3])], dim=2)

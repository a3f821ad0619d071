"""The compute of a ring, on one device: attention split into N key/value blocks and merged, against one call.

A rank of an N-ring computes its L/N queries against N blocks of L/N keys (`attention_with_lse`) and merges
the partial results by log-sum-exp (`merge_partial_`). N ranks do that N times over; one device doing the
whole attention in one kernel call is the ideal. Efficiency = t(one call over L) / (N · t(one rank's ring
compute)) — how much splitting attention into blocks costs, independent of any communication. The one call
uses the same kernel as the blocks (cp_hooks' `attention_with_lse`); `efficiency_vs_sdpa` compares with
whatever `F.scaled_dot_product_attention` picks instead.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from cp_hooks.attention.local import attention_with_lse
from cp_hooks.attention.merge import merge_partial_


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ring_compute(q, k, v, parts: int) -> torch.Tensor:
    """One rank's share of an N-ring (queries of block 0 against every key block), merged in float32."""
    ql = q.shape[1] // parts
    qs = q[:, :ql]
    out = lse = None
    for kb, vb in zip(k.chunk(parts, dim=1), v.chunk(parts, dim=1)):
        block_out, block_lse = attention_with_lse(qs, kb, vb)
        if out is None:
            out, lse = block_out.float(), block_lse
        else:
            out, lse = merge_partial_(out, lse, block_out, block_lse)
    return out


def split_efficiency(lengths, parts_list, device, dtype, *, heads: int, head_dim: int, repeats: int) -> list[dict]:
    records = []
    for length in lengths:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, length, heads, head_dim, generator=g).to(device, dtype) for _ in range(3))
        # The same kernel on the whole sequence (what splitting costs), and torch's own SDPA choice (which
        # may be another, faster kernel: cuDNN on Hopper).
        full = _time(lambda: attention_with_lse(q, k, v), device, repeats)
        sdpa = _time(lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)),
                     device, repeats)
        for parts in parts_list:
            if length % parts:
                continue
            rank_time = _time(lambda: ring_compute(q, k, v, parts), device, repeats)
            records.append(dict(suite="split", workload=f"split-{length}", tokens=length, parts=parts,
                                variant=f"ring compute, {parts} blocks", full_ms=full * 1e3, sdpa_ms=sdpa * 1e3,
                                rank_ms=rank_time * 1e3, efficiency=full / (parts * rank_time),
                                efficiency_vs_sdpa=sdpa / (parts * rank_time),
                                dtype=str(dtype).replace("torch.", ""), heads=heads, head_dim=head_dim))
    return records

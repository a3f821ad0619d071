"""Helpers used inside worker ranks: configs on cached meshes, shards, and error measures."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.profiler import ProfilerActivity, profile

from cp_hooks import ContextParallelConfig
from cp_hooks.sharding import take_shard

_MESHES: dict = {}

FP32_TOL = 1e-5  # max |cp - reference| / max(1, max |reference|), fp32 (DESIGN.md)
BF16_TOL = 3e-2  # same measure for bf16 inputs against the fp64 reference; bf16 SDPA alone is ~1e-2


def make_config(ring: int = 1, ulysses: int = 1, **kwargs) -> ContextParallelConfig:
    """A set-up config; meshes are cached per shape so that process groups are not created per test."""
    key = (ring, ulysses)
    if key not in _MESHES:
        _MESHES[key] = init_device_mesh("cpu", key, mesh_dim_names=("ring", "ulysses"))
    return ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses, **kwargs).setup(_MESHES[key])


def shard(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """This rank's piece of a replicated tensor (piece r of tensor_split)."""
    return take_shard(x, dim, dist.get_rank(), dist.get_world_size()).contiguous()


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to the output scale (at least 1)."""
    actual, expected = actual.double(), expected.double()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return (actual - expected).abs().max().item() / scale if expected.numel() else 0.0


def peak_live_bytes(fn, calls: int = 3) -> int:
    """Peak of (bytes allocated - bytes freed) during fn(), from the profiler's CPU allocator events.

    The smallest peak over `calls` calls: a free done by gloo's worker thread (when it drops the last
    reference to a send buffer after the collective) is not recorded, so a single call can over-count by
    a buffer; nothing makes it under-count.
    """
    peaks = []
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
        peaks.append(peak)
    return min(peaks)

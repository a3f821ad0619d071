"""Helpers used inside worker ranks: configs on cached meshes, shards, and error measures."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from cp_hooks import ContextParallelConfig
from cp_hooks.forward.sharding import take_shard

# The allocator-exact peak memory measure is the benchmark's; the memory tests use the same one.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import measure  # noqa: E402

_MESHES: dict = {}

FP32_TOL = 1e-5  # max |cp - reference| / max(1, max |reference|), fp32 (docs/architecture.md, Tolerances)
BF16_TOL = 3e-2  # same measure for bf16 inputs against the fp64 reference; bf16 SDPA alone is ~1e-2


def make_config(ring: int = 1, ulysses: int = 1, cfg: int = 1, **kwargs) -> ContextParallelConfig:
    """A set-up config; meshes are cached per shape so that process groups are not created per test."""
    key = (ring, ulysses) if cfg == 1 else (cfg, ring, ulysses)
    if key not in _MESHES:
        names = ("ring", "ulysses") if cfg == 1 else ("cfg", "ring", "ulysses")
        _MESHES[key] = init_device_mesh("cpu", key, mesh_dim_names=names)
    config = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses, cfg_degree=cfg, **kwargs)
    return config.setup(_MESHES[key])


def shard(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """This rank's piece of a replicated tensor (piece r of tensor_split)."""
    return take_shard(x, dim, dist.get_rank(), dist.get_world_size()).contiguous()


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to the output scale (at least 1)."""
    actual, expected = actual.double(), expected.double()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return (actual - expected).abs().max().item() / scale if expected.numel() else 0.0


def peak_live_bytes(fn, calls: int = 3) -> int:
    """Peak bytes allocated during fn() above what was allocated before, the least of `calls` calls.

    The benchmark's allocator-exact measure (`benchmarks/measure.py`); see there why the least of several.
    """
    return measure.peak_memory(fn, torch.device("cpu"), calls=calls)[1]


def catalogue_runs(class_name: str, world: int):
    """(case, mode, model, inputs, config) for every case of a catalogue entry in every mode of `world` ranks it
    is verified in (two-rank modes, or the hybrid modes at four), with the entry's anything flags."""
    from cp_hooks.verify.catalogue import get_entry

    entry = get_entry(class_name)
    for case in entry.cases:
        model, inputs = entry.build(case)
        for mode in entry.modes if world == 2 else entry.hybrid_modes:
            kwargs = mode.config_kwargs(entry.anything)
            yield case, mode, model, inputs, make_config(kwargs.pop("ring_degree"), kwargs.pop("ulysses_degree"),
                                                         **kwargs)


ORDERS = ("before enable", "after enable")


def apply_around_enable(model, config, apply, order: str) -> None:
    """`apply(model)` (an offloading, a cache, an adapter) before or after `enable_parallelism(model, config)`,
    as `order` (one of ORDERS) says: what composes with cp_hooks must do so in either order."""
    from cp_hooks import enable_parallelism

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "before enable":
        apply(model)
    enable_parallelism(model, config)
    if order == "after enable":
        apply(model)

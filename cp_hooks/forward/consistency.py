"""Cross-rank consistency of a parallel forward's inputs: catch what would otherwise hang a collective.

Every rank of the context-parallel group must call the model with inputs of the same shapes and dtypes
(the same prompt length, the same batch): ranks that split different lengths issue collectives of
different sizes, and gloo/nccl then hang or fail far from the cause. Before the first split, each rank
hashes the shapes and dtypes of its tensor inputs into one int64 and the group all-gathers them: one tiny
collective per forward (tens of microseconds on gloo; on CUDA one small device-to-host copy). Only when
the fingerprints differ is a second, object all-gather issued — by every rank, since every rank sees
the same gathered fingerprints — to name each rank's shapes in the error.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from cp_hooks import comm
from cp_hooks.forward.context import groups_compute_different_calls
from cp_hooks.forward.hooks import ModelHook
from cp_hooks.runtime import ContextParallelRuntime


def describe_inputs(args: tuple, kwargs: dict) -> str:
    """A canonical text of the shapes and dtypes of every tensor among the arguments."""
    parts = []

    def visit(name, value):
        if isinstance(value, torch.Tensor):
            parts.append(f"{name}:{tuple(value.shape)}:{str(value.dtype).replace('torch.', '')}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{name}[{i}]", item)
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                visit(f"{name}.{key}", value[key])

    for i, arg in enumerate(args):
        visit(f"arg{i}", arg)
    for key in sorted(kwargs):
        visit(key, kwargs[key])
    return ", ".join(parts)


def _fingerprint(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def check_consistent(description: str, runtime: ContextParallelRuntime, device: torch.device) -> None:
    """Raise the same ValueError on every rank if the ranks' input descriptions differ."""
    # Every rank gets the same inputs, the cfg groups too; except in a predicted sequential-guidance pair, where
    # each cfg group computes its own call (the negative prompt may have another length): there, its group.
    group = runtime.flat_group if groups_compute_different_calls() else runtime.world_group
    world = dist.get_world_size(group)
    fingerprints = [
        row[0] for row in comm.exchange_sizes([_fingerprint(description)], group, device, payload="consistency")
    ]
    if len(set(fingerprints)) == 1:
        return
    descriptions: list = [None] * world
    dist.all_gather_object(descriptions, description, group=group)
    lines = "\n".join(f"  rank {r}: {d}" for r, d in enumerate(descriptions))
    raise ValueError(
        "The context-parallel ranks were called with different input shapes or dtypes; every rank of the group "
        "must pass the same full inputs (same prompt length, same batch, same seed):\n" + lines
    )


class ConsistencyHook(ModelHook):
    """Runs `check_consistent` on the model's inputs before any split (strict mode)."""

    def __init__(self, runtime: ContextParallelRuntime | None = None) -> None:
        self.runtime = runtime

    def pre_forward(self, module, args, kwargs):
        if torch.compiler.is_compiling():
            # A compiled graph cannot hash its inputs' shapes into a collective. With whole-model compile the
            # check is skipped inside the graph (the compiled graph's own shape guards pin every rank to the
            # shapes it was traced with); with compile_repeated_blocks this hook runs eagerly, as without
            # compile (docs/architecture.md, "Compile boundary").
            return args, kwargs
        check_consistent(describe_inputs(args, kwargs), self.runtime, torch.device(self.runtime.device_type))
        return args, kwargs

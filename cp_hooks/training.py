"""Training under context parallelism: summing the partial parameter gradients over the CP group.

Each rank back-propagates only through its own tokens, so a parameter's gradient on one rank is the part
of the full gradient that comes from that rank's shard. Summing over the context-parallel group gives the
single-process gradient. This holds for parameters before, between and after the plan's splits, as long
as every rank computes the same loss from the full, gathered output (the plan's gather hooks make the
output full on every rank) and no parameter is applied after the last gather (each rank would then hold
its full gradient, and the sum would count it N times). With data parallelism on top, average over the data-parallel group as usual afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .config import ContextParallelConfig


def reduce_gradients(model: nn.Module, config: ContextParallelConfig) -> None:
    """Sum every parameter's `.grad` over the context-parallel group, in place. Call after `backward()`.

    Gradients are flattened into one buffer per dtype and device, so this is one all-reduce per dtype.

    Example:
        >>> loss = loss_fn(model(**batch), target)
        >>> loss.backward()
        >>> reduce_gradients(model, config)
        >>> optimizer.step()
    """
    config._require_setup()
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for param in model.parameters():
        if param.grad is not None:
            buckets.setdefault((param.grad.dtype, param.grad.device), []).append(param.grad)
    # Sorted so that every rank issues the all-reduces in the same order.
    for key in sorted(buckets, key=str):
        grads = buckets[key]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=config._flat_group)
        for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(reduced)

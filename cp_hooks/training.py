"""Training under context parallelism: summing the partial parameter gradients over the CP group.

Each rank back-propagates only through its own tokens, so a parameter's gradient on one rank is the part
of the full gradient that comes from that rank's shard; layers after the plan's final gather run on every
rank and hold 1/N of their gradient there (see `cp_hooks.sharding`). Summing over the context-parallel group
gives the single-process gradient, wherever the parameter acts, as long as every rank computes the same
loss from the full, gathered output. With data parallelism on top, average over the data-parallel group as
usual afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from cp_hooks.config import ContextParallelConfig

BUCKET_BYTES = 32 << 20  # gradients are reduced in buckets of about this size: bounded extra memory


def reduce_gradients(model: nn.Module, config: ContextParallelConfig, *, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum every parameter's `.grad` over the context-parallel group, in place. Call after `backward()`.

    Ranks may disagree on which parameters received a gradient (a layer that only some ranks' tokens
    reach, e.g. an embedding whose rows are looked up by token): the ranks first agree on the set, a
    parameter with a gradient on any rank gets a zero gradient where it has none, and parameters with no
    gradient anywhere keep `None` (as an optimizer expects). Gradients are then summed in buckets of about
    `bucket_bytes` per dtype and device (one all-reduce per bucket; a gradient larger than a bucket is
    reduced in place), so the extra memory is one bucket, not a copy of every gradient.

    Args:
        model: the parallelized model (every rank holds the same parameters, in the same order).
        config: its set-up `ContextParallelConfig`.
        bucket_bytes: the size of one flattened all-reduce.

    Raises:
        RuntimeError: the config is not set up.
        ValueError: the ranks' models have different numbers of parameters (raised on every rank).

    Example:
        >>> loss = loss_fn(model(**batch), target)
        >>> loss.backward()
        >>> reduce_gradients(model, config)
        >>> optimizer.step()
    """
    runtime = _runtime(model, config)
    group = runtime.world_group  # the context-parallel group, and the cfg groups that split the batch
    params = [p for p in model.parameters() if p.requires_grad]
    device = _flag_device(runtime)
    # Every rank must issue the same all-reduces: first agree on the parameter count, then on which exist.
    count = torch.tensor([len(params), -len(params)], dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX, group=group)
    if count[0].item() != -count[1].item():
        raise ValueError(
            f"The context-parallel ranks' models have different numbers of trainable parameters (this rank: "
            f"{len(params)}, largest: {count[0].item()}, smallest: {-count[1].item()}); every rank must hold the "
            "same model."
        )
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX, group=group)
    grads = []
    for param, anywhere in zip(params, has_grad.tolist()):
        if not anywhere:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    by_kind: dict[tuple, list[torch.Tensor]] = {}
    for grad in grads:
        by_kind.setdefault((str(grad.dtype), str(grad.device)), []).append(grad)
    # Sorted, and in parameter order within a kind, so that every rank issues the same all-reduces.
    for kind in sorted(by_kind):
        for bucket in _buckets(by_kind[kind], bucket_bytes):
            _all_reduce_bucket(bucket, group)


def _runtime(model: nn.Module, config: ContextParallelConfig):
    # The groups the model was enabled with (the config may have been set up again since), else the config's.
    state = model.__dict__.get("_cp_hooks_state")
    return state.runtime if state is not None else config.runtime


def _flag_device(runtime) -> torch.device:
    if runtime.device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(runtime.device_type)


def _buckets(grads: list[torch.Tensor], bucket_bytes: int):
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append(grad)
        size += nbytes
    if bucket:
        yield bucket


def _all_reduce_bucket(grads: list[torch.Tensor], group) -> None:
    if len(grads) == 1 and grads[0].is_contiguous():
        dist.all_reduce(grads[0], group=group)  # one tensor (perhaps larger than a bucket): in place, no copy
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()

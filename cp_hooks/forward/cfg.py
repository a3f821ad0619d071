"""Batch (classifier-free-guidance) parallelism: each cfg group of ranks runs an equal part of the batch.

Pipelines with batched guidance (SD3, PixArt, CogVideoX, LTX, HunyuanVideo, ...) stack the conditional and
unconditional inputs into one batch and call the transformer once per step. With `cfg_degree=2` the two
halves run at the same time on two groups of ranks, each group with context parallelism inside it, and
nothing but the final output crosses between the groups (docs/architecture.md, "Batch groups").

`CfgBatchHook` sits on the model, outside the plan's hooks: before the forward it keeps this group's part of
every batched input, after it gathers the output's parts over the cfg group, so the output is whole on every
rank. Which inputs are batched is read from their shapes, the same way for every model (no per-model code):
the batch size B is the leading dimension of `hidden_states` (or of the first tensor argument), and

* a tensor argument whose leading dimension is B is batched (split along dim 0), also inside a dict or a
  list argument (`added_cond_kwargs`, Bria FIBO's per-layer text states);
* a list of B items without tensors in them is per-sample metadata (e.g. QwenImage's `img_shapes`, one list
  of frame shapes per sample) and is split too;
* tuples are left whole: models pass tables for the whole sequence that way (rotary `(cos, sin)`, Allegro's
  per-axis frequencies and positions), whose leading dimension may equal B by chance; anything else is left
  whole too.

A tensor with B rows that is not batched would be split wrongly; the catalogue's batched-CFG models are
verified against one process (tests/test_cfg.py). A batch that `cfg_degree` does not divide is refused,
on every rank alike, before any collective.
"""

from __future__ import annotations

import torch

from cp_hooks.forward.context import in_paired_call
from cp_hooks.forward.hooks import ModelHook
from cp_hooks.forward.sharding import gather_tensor, split_tensor
from cp_hooks.forward.tree import has_tensor, map_tensors
from cp_hooks.runtime import ContextParallelRuntime


class CfgBatchHook(ModelHook):
    """On the model: split the batch over the cfg group before the forward, gather the output's parts after."""

    def __init__(self, runtime: ContextParallelRuntime | None = None) -> None:
        self.runtime = runtime
        self._batch: int | None = None

    def pre_forward(self, module, args, kwargs):
        if in_paired_call():  # one call of a sequential-guidance pair: each group runs a whole call
            self._batch = None
            return args, kwargs
        batch = _batch_size(args, kwargs)
        degree = self.runtime.cfg_degree
        if batch is None:
            raise ValueError(
                f"cfg_degree={degree} splits the batch, but {type(module).__name__} got no tensor to read the batch "
                "size from (no `hidden_states` and no tensor argument)."
            )
        if batch % degree:
            raise ValueError(
                f"cfg_degree={degree} splits the batch into equal parts, but the batch has {batch} samples. "
                "Pass a batch the degree divides (with classifier-free guidance: conditional and unconditional "
                "inputs stacked, or num_images_per_prompt a multiple of the degree), call the model in "
                "cache_context('cond') / ('uncond') pairs with cfg_degree=2 (sequential guidance, "
                "cp_hooks.cfg_sequential; with torch.compile, compile the repeated blocks, not the whole model), "
                "or set cfg_degree=1."
            )
        self._batch = batch
        split = _Splitter(batch, self.runtime.cfg_rank, degree)
        return tuple(split(a) for a in args), {k: split(v) for k, v in kwargs.items()}

    def post_forward(self, module, output):
        if self._batch is None:
            return output
        runtime, part = self.runtime, self._batch // self.runtime.cfg_degree

        def gather(t: torch.Tensor) -> torch.Tensor:
            if t.dim() == 0 or t.shape[0] != part:
                return t  # not batched (a scalar, a loss): the same on every group
            return gather_tensor(
                t, 0, runtime.cfg_group, runtime.cfg_degree, uneven=False, group_key=runtime.cfg_group_key
            )

        return map_tensors(output, gather)


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, torch.Tensor) and hidden.dim() > 0:
        return hidden.shape[0]
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


class _Splitter:
    """This group's part of every batched value in a nested structure of arguments."""

    def __init__(self, batch: int, rank: int, degree: int) -> None:
        self.batch, self.rank, self.degree = batch, rank, degree

    def __call__(self, value):
        if isinstance(value, torch.Tensor):
            if value.dim() > 0 and value.shape[0] == self.batch:
                return split_tensor(value, 0, self.rank, self.degree)
            return value
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list):
            if len(value) == self.batch and not has_tensor(value):
                part = self.batch // self.degree  # per-sample metadata, one item per sample
                return value[self.rank * part : (self.rank + 1) * part]
            return [self(item) for item in value]
        return value

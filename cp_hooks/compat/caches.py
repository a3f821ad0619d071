"""Diffusers caches whose skip decision comes from hidden states: reduce the metric over the context-parallel group.

diffusers' First Block Cache (`model.enable_cache(FirstBlockCacheConfig(threshold=...))`) decides, after the
first transformer block, whether to run the remaining blocks: `FBCHeadBlockHook._should_compute_remaining_blocks`
compares `mean|r - r_prev| / mean|r_prev|` of the first block's hidden-states residual `r` with the threshold.
Under context parallelism each rank holds only its shard of the tokens, so each rank would compute the metric on
its shard and could decide differently; the rank that runs the remaining blocks then enters attention collectives
the other never reaches, and the group hangs until its timeout.

Here the metric is made global: each rank sums `|r - r_prev|` and `|r_prev|` over its tokens (in float64) and
counts them, one all-reduce of three scalars over the context-parallel group (`runtime.flat_group`) gives the
global sums, and the means are the global sums over the global count. The decision is therefore identical on
every rank and equals the single-process one up to rounding.

Where the metric sees which tokens: cp_hooks' split and gather are torch module hooks, which run in
`Module.__call__` around whatever `forward` is; diffusers' cache hooks replace the block's `forward`. So on the
head block the order is always: cp_hooks' pre-hooks (a split planned at the block itself, e.g. Wan's `blocks.0`)
-> FBC's replaced forward (the metric, on this rank's shard) -> cp_hooks' post-hooks. For a split planned at the
model's input (Flux) the block receives the shard anyway. Either way the metric sees exactly this rank's shard,
and the shards together are the whole sequence, so the sum over ranks is the single-process sum. (A plan that
gathered before the head block would make every rank hold every token; the sums would then count each token N
times in numerator and denominator alike, and the ratio is still the single-process one.)

Only models cp_hooks has enabled are affected: the replaced method reduces only inside an enabled model's
forward (the forward context, `cp_hooks.forward.context`) and otherwise calls diffusers' original. The method
is replaced on the class (so a cache enabled before or after `enable_parallelism` is covered) while at least
one model is enabled, and restored when the last one is disabled or collected: the patch itself lives in
`routing/diffusers_caches.py`, with every other patch of torch or diffusers; this module holds what the
replacements compute.

Other diffusers caches, checked against diffusers 0.42: TaylorSeer, FasterCache and Pyramid Attention Broadcast
decide from the step index / timestep only, identical on every rank; MagCache decides from its precomputed
`mag_ratios` and the step index (its hidden-state ratio is only computed and logged in calibration mode).
SeaCache decides from a hidden-state metric too, but filters the hidden states with an FFT over the whole
latent grid first, which no rank holds: an enabled model refuses it with a ValueError in its forward (in either
order of enabling), rather than decide differently from one process.

FasterCache without guidance distillation (`is_guidance_distilled=False`) splits the batch of every call into
[unconditional | conditional] halves in a hook that replaces the model's `forward`. With `cfg_degree > 1`,
`CfgBatchHook` (a torch pre-hook, so it runs before that replaced forward) has already kept this group's part of
the batch, and FasterCache would take halves of that part for the two branches: with one prompt its attention
hooks fail on a batch of 1 (IndexError), with several the result is silently wrong. A model enabled with
`cfg_degree > 1` refuses it with a ValueError in its forward, on every rank alike (in either order of
enabling); with `cfg_degree` 1 the batch stays whole and FasterCache is exact (tests/test_faster_cache_batched.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cp_hooks.forward.context import current_runtime
from cp_hooks.forward.hooks import ModelHook


class CacheMetricsHook(ModelHook):
    """On an enabled model with `cfg_degree > 1`: refuses FasterCache's split of the batch into guidance
    branches before the forward (see the module docstring)."""

    def __init__(self, runtime=None) -> None:
        self.runtime = runtime

    def pre_forward(self, module, args, kwargs):
        if self.runtime is not None and self.runtime.cfg_degree > 1:
            _refuse_batched_faster_cache(module)
        return args, kwargs


def _refuse_batched_faster_cache(module) -> None:
    """ValueError if diffusers' FasterCache on `module` splits the batch into guidance branches (see the module
    docstring); called only on models whose batch is split over cfg groups."""
    registry = getattr(module, "_diffusers_hook", None)
    hook = registry.get_hook("faster_cache_denoiser") if registry is not None else None
    if hook is not None and not getattr(hook, "is_guidance_distilled", True):
        raise ValueError(
            "FasterCache with is_guidance_distilled=False does not work with cfg_degree > 1: it splits the batch "
            "of every call into unconditional and conditional halves, but with cfg_degree the model's forward "
            "receives only this group's part of the batch (or, with sequential guidance, one of the two calls), "
            "so FasterCache would take the wrong samples for the two branches. Use cfg_degree=1 (Ulysses and ring "
            "split the sequence and keep the batch whole), or model.disable_cache()."
        )


def global_relative_change(current: torch.Tensor, previous: torch.Tensor, runtime) -> float:
    """`mean|current - previous| / mean|previous|` over the tokens of every rank of `runtime.world_group`
    (the context-parallel group, and every cfg group when the batch is split)."""
    acc = torch.float32 if current.device.type == "mps" else torch.float64
    sums = torch.stack(
        [
            (current - previous).abs().sum(dtype=acc),
            previous.abs().sum(dtype=acc),
            torch.tensor(float(current.numel()), dtype=acc, device=current.device),
        ]
    )
    dist.all_reduce(sums, group=runtime.world_group)
    numerator, denominator, count = sums.tolist()
    if count == 0:
        return float("nan")
    return (numerator / count) / (denominator / count)


def group_reduced_fbc_decision(original):
    """A replacement for `FBCHeadBlockHook._should_compute_remaining_blocks` that decides on the metric reduced
    over the enabled model's group, and calls `original` outside enabled forwards."""

    @torch.compiler.disable
    def _should_compute_remaining_blocks(self, hidden_states_residual: torch.Tensor) -> bool:
        runtime = current_runtime()
        if runtime is None or runtime.total_ranks == 1:
            return original(self, hidden_states_residual)
        shared_state = self.state_manager.get_state()
        if shared_state.head_block_residual is None:  # the same on every rank: the states advance in lockstep
            return True
        diff = global_relative_change(hidden_states_residual, shared_state.head_block_residual, runtime)
        return diff > self.threshold

    _should_compute_remaining_blocks._cp_hooks_global_metric = True
    return _should_compute_remaining_blocks


def sea_cache_refusal(original):
    """A replacement for `SeaCacheSharedState.resolve_gate` that refuses inside enabled forwards (see the module
    docstring) and calls `original` elsewhere."""

    def _refuse_sea_cache(self, *args, **kwargs):
        if current_runtime() is not None:
            raise ValueError(
                "SeaCache does not work with context parallelism: its skip metric filters the hidden states with "
                "an FFT over the whole latent grid, and each rank holds only its shard, so the ranks would decide "
                "differently from one process. Use First Block Cache, TaylorSeer, MagCache or Pyramid Attention "
                "Broadcast (exact under cp_hooks), or model.disable_cache()."
            )
        return original(self, *args, **kwargs)

    _refuse_sea_cache._cp_hooks_refusal = True
    return _refuse_sea_cache

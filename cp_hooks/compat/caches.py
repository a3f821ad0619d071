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

Only models cp_hooks has enabled are affected: `enable_parallelism` adds `CacheMetricsHook` to the model, which
marks "inside this enabled model's forward, with this runtime" (a thread-local stack); the replaced method
reduces only when such a mark is present and otherwise calls diffusers' original. The method is replaced on the
class (so a cache enabled before or after `enable_parallelism` is covered) while at least one model is enabled,
and restored when the last one is disabled.

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

import threading
import weakref

import torch
import torch.distributed as dist

from cp_hooks.forward.hooks import ModelHook

class _Local(threading.local):
    def __init__(self) -> None:
        # Set in every thread before use: a compiled graph guards on it (see attention.routing._State).
        self.stack: list = []


_local = _Local()
_enabled_models: "weakref.WeakSet" = weakref.WeakSet()
_lock = threading.Lock()
_original = None  # diffusers' FBCHeadBlockHook._should_compute_remaining_blocks while ours is installed


def _stack() -> list:
    return _local.stack


def current_runtime():
    """The runtime of the innermost enabled model whose forward is running on this thread, or None."""
    stack = _stack()
    return stack[-1] if stack else None


class CacheMetricsHook(ModelHook):
    """On an enabled model: marks its forward so that cache metrics computed inside are reduced over its group;
    with `cfg_degree > 1`, refuses FasterCache's split of the batch into guidance branches first."""

    def __init__(self, runtime=None) -> None:
        self.runtime = runtime

    def pre_forward(self, module, args, kwargs):
        if self.runtime is not None and self.runtime.cfg_degree > 1:
            _refuse_batched_faster_cache(module)
        return args, kwargs

    def enter(self, module) -> None:
        _stack().append(self.runtime)

    def exit(self, module) -> None:  # also when the forward raises (always_call)
        stack = _stack()
        if stack:
            stack.pop()


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


def _fbc_hook_class():
    try:
        from diffusers.hooks.first_block_cache import FBCHeadBlockHook
    except Exception:  # no diffusers, or a version without First Block Cache: nothing to patch
        return None
    return FBCHeadBlockHook if hasattr(FBCHeadBlockHook, "_should_compute_remaining_blocks") else None


def global_relative_change(current: torch.Tensor, previous: torch.Tensor, runtime) -> float:
    """`mean|current - previous| / mean|previous|` over the tokens of every rank of `runtime.world_group`
    (the context-parallel group, and every cfg group when the batch is split)."""
    acc = torch.float32 if current.device.type == "mps" else torch.float64
    sums = torch.stack([
        (current - previous).abs().sum(dtype=acc),
        previous.abs().sum(dtype=acc),
        torch.tensor(float(current.numel()), dtype=acc, device=current.device),
    ])
    dist.all_reduce(sums, group=runtime.world_group)
    numerator, denominator, count = sums.tolist()
    if count == 0:
        return float("nan")
    return (numerator / count) / (denominator / count)


@torch.compiler.disable
def _should_compute_remaining_blocks(self, hidden_states_residual: torch.Tensor) -> bool:
    runtime = current_runtime()
    if runtime is None or runtime.total_ranks == 1:
        return _original(self, hidden_states_residual)
    shared_state = self.state_manager.get_state()
    if shared_state.head_block_residual is None:  # the same on every rank: the states advance in lockstep
        return True
    diff = global_relative_change(hidden_states_residual, shared_state.head_block_residual, runtime)
    return diff > self.threshold


_should_compute_remaining_blocks._cp_hooks_global_metric = True


def _sea_cache_hook_class():
    # Every SeaCache hook (root or leader block) decides through its shared state's `resolve_gate`.
    try:
        from diffusers.hooks.sea_cache import SeaCacheSharedState
    except Exception:  # no diffusers, or a version without SeaCache
        return None
    return SeaCacheSharedState if hasattr(SeaCacheSharedState, "resolve_gate") else None


_sea_original = None  # diffusers' SeaCacheSharedState.resolve_gate while ours is installed


def _refuse_sea_cache(self, *args, **kwargs):
    if current_runtime() is not None:
        raise ValueError(
            "SeaCache does not work with context parallelism: its skip metric filters the hidden states with an "
            "FFT over the whole latent grid, and each rank holds only its shard, so the ranks would decide "
            "differently from one process. Use First Block Cache, TaylorSeer, MagCache or Pyramid Attention "
            "Broadcast (exact under cp_hooks), or model.disable_cache()."
        )
    return _sea_original(self, *args, **kwargs)


_refuse_sea_cache._cp_hooks_refusal = True


def _patch_sea_cache() -> None:
    global _sea_original
    cls = _sea_cache_hook_class()
    if cls is None or _sea_original is not None or getattr(cls.__dict__.get("resolve_gate"), "_cp_hooks_refusal", False):
        return
    _sea_original = cls.__dict__["resolve_gate"]
    cls.resolve_gate = _refuse_sea_cache


def _unpatch_sea_cache() -> None:
    global _sea_original
    cls = _sea_cache_hook_class()
    if cls is not None and _sea_original is not None and cls.__dict__.get("resolve_gate") is _refuse_sea_cache:
        cls.resolve_gate = _sea_original
    _sea_original = None


def acquire(model) -> None:
    """Reduce cache metrics over the group inside `model`'s forwards (call after adding `CacheMetricsHook`)."""
    global _original
    with _lock:
        _enabled_models.add(model)
        _patch_sea_cache()
        cls = _fbc_hook_class()
        if cls is None or _original is not None:
            return
        current = cls.__dict__.get("_should_compute_remaining_blocks")
        if getattr(current, "_cp_hooks_global_metric", False):  # already ours (e.g. module reloaded)
            return
        _original = current
        cls._should_compute_remaining_blocks = _should_compute_remaining_blocks


def release(model) -> None:
    """Undo `acquire(model)`; diffusers' method is restored when no enabled model is left. Idempotent."""
    global _original
    with _lock:
        _enabled_models.discard(model)
        if len(_enabled_models):
            return
        _unpatch_sea_cache()
        if _original is None:
            return
        cls = _fbc_hook_class()
        if cls is not None and cls.__dict__.get("_should_compute_remaining_blocks") is _should_compute_remaining_blocks:
            cls._should_compute_remaining_blocks = _original
        _original = None


def is_patched() -> bool:
    """True while diffusers' First Block Cache metric is replaced by the group-reduced one."""
    return _original is not None

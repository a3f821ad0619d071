"""`enable_parallelism` / `disable_parallelism`: the orchestrator.

It reads top to bottom: validate the model and plan -> bind the config to the mesh -> install the plan's
split/gather hooks -> route attention. Everything that can fail on user input fails before the first
collective (the mesh creation in `config.setup()`), identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from cp_hooks.compat import caches
from cp_hooks.compat.diffusers_config import as_cp_hooks_config, refuse_diffusers_parallelism
from cp_hooks.compat.offload import InputDeviceHook, execution_device
from cp_hooks.compat.sequential_cfg import SequentialCfg, supports_sequential
from cp_hooks.config import ContextParallelConfig
from cp_hooks.forward.cfg import CfgBatchHook
from cp_hooks.forward.consistency import ConsistencyHook
from cp_hooks.forward.context import ForwardContextHook, ModelContext
from cp_hooks.forward.hooks import HookRegistry, ModelHook
from cp_hooks.forward.planned_modules import PlannedModulesHook
from cp_hooks.forward.shard_hooks import GatherHook, ReplicatedOutputHook, SplitHook
from cp_hooks.plans.pipelines import is_pipeline, parallel_components
from cp_hooks.plans.registry import get_plan, refuse_unsupported
from cp_hooks.plans.resolve import resolve_modules
from cp_hooks.plans.specs import ContextParallelProcessor, LocalAttention
from cp_hooks.routing.hook import AttentionRoutingHook
from cp_hooks.routing.patches import PatchLease
from cp_hooks.routing.processor_swap import ProcessorSwap
from cp_hooks.routing.sdpa import LocalAttentionHook
from cp_hooks.runtime import ContextParallelRuntime

_STATE_ATTR = "_cp_hooks_state"
_PIPELINE_ATTR = "_cp_hooks_components"  # on a pipeline: the (name, module) pairs it parallelized
_HOOK_PREFIX = "cp_hooks."


@dataclass
class _ParallelState:
    config: ContextParallelConfig
    runtime: ContextParallelRuntime
    plan: dict
    lease: PatchLease  # the patches outside the model it holds (routing/patches.py)
    hooks: list = field(default_factory=list)  # (module, hook name)
    attention: AttentionRoutingHook | None = None
    processors: ProcessorSwap | None = None  # the plan's own attention processors
    sequential_cfg: SequentialCfg | None = None


def is_parallelized(model) -> bool:
    """True while `model` (a module, or a pipeline) has context parallelism enabled."""
    if is_pipeline(model):
        return bool(getattr(model, _PIPELINE_ATTR, None))
    return _STATE_ATTR in model.__dict__


def enable_parallelism(model, config, plan: dict | None = None, *, strict: bool = True, vae: bool | None = None):
    """Give `model` context parallelism as `plan` describes; returns the same model.

    Args:
        model (nn.Module | DiffusionPipeline): any `nn.Module` (a diffusers transformer, or a model that calls
            SDPA), or a diffusers pipeline: then every component with a plan (`transformer`, `transformer_2`,
            ...) is parallelized, the VAE's decode/encode is split by rows (`vae`), the rest (text encoders) is
            left alone.
        config (ContextParallelConfig): the degrees and options, as cp_hooks' `ContextParallelConfig` or diffusers'
            `ContextParallelConfig` / `ParallelConfig(context_parallel_config=...)`; set up here if it is not yet.
        plan: module name -> spec (see `cp_hooks.plans`). Default: the plan registered for the model's
            class, else the model's own `_cp_plan`.
        strict: before each forward, check that every rank passes inputs of the same shapes and dtypes
            (one 8-byte all-gather per forward); a mismatch raises on every rank instead of hanging a
            collective. Turn off only for the last microseconds of a tuned deployment.
        vae: pipelines only. None (default): split `pipe.vae` over all of the config's ranks when its class is
            supported (`cp_hooks.vae.supports_vae`), else leave it whole and log why; True: the same, but an
            unsupported VAE raises `UnsupportedVAEError`; False: leave the VAE whole (docs/vae.md).

    Returns:
        (nn.Module | DiffusionPipeline): `model` itself, whose forward now takes and returns full (unsplit)
            tensors on every rank.

    Raises:
        RuntimeError: no process group (the message says how to launch), or already enabled.
        ValueError / TypeError: a malformed plan, a plan naming a missing module or parameter, degrees that
            do not fit the world size, a model on another device than the mesh, or a model configuration its
            built-in plan declares unsupported (`UnsupportedConfig`).

    Example:
        >>> enable_parallelism(transformer, ContextParallelConfig(ulysses_degree=2))
        >>> out = transformer(**inputs)   # on every rank, equal to the single-process output
        >>> enable_parallelism(pipe, ContextParallelConfig(ulysses_degree=2))   # a whole pipeline
    """
    config = as_cp_hooks_config(config)
    if is_pipeline(model):
        return _enable_pipeline(model, config, plan, strict, vae)
    if not isinstance(model, nn.Module):
        raise TypeError(f"enable_parallelism needs an nn.Module or a diffusers pipeline, got {type(model).__name__}.")
    refuse_diffusers_parallelism(model)
    if is_parallelized(model):
        raise RuntimeError(
            f"Context parallelism is already enabled on this {type(model).__name__}; call "
            "disable_parallelism(model) first to change the config or plan."
        )
    if plan is None:
        refuse_unsupported(model, config.cfg_degree)  # configurations the built-in plan declares it cannot serve
    plan = get_plan(model, plan)
    # (module, hook name, hook): built first, so that plan errors come before any collective; they receive
    # the runtime that setup binds right after. On the model, the eager checks come first (plain Python also
    # under torch.compile), then the traced hooks, so that each kind is one pair of torch hooks there
    # (cp_hooks.hooks, _Segment).
    plan_hooks, swaps, factories = [], [], []
    for name, spec in plan.items():
        for full_name, module in resolve_modules(model, name):
            if isinstance(spec, ContextParallelProcessor):
                swaps.append((full_name, module, spec.factory))
                continue
            factory = _plan_hook_factory(full_name, spec)
            hook = factory(module)
            hook_name = f"{_HOOK_PREFIX}{type(hook).__name__}[{name}]"
            plan_hooks.append((module, hook_name, hook))
            factories.append((module, hook_name, factory))
    # cfg_degree alone: each group runs the whole sequence, nothing to split. A mesh whose dimensions are all 1
    # runs the whole context-parallel path with nothing to exchange (a one-GPU check of compile and kernels).
    splits_sequence = config.world_size > 1 or config.cfg_degree == 1
    installed: list = []  # (module, hook name) as installed; kept current when planned modules are replaced
    # First: the forward context (this model's forward is running on this thread) brackets everything else; it
    # is put in front once the runtime is set up, below.
    hooks: list[tuple[nn.Module, str, ModelHook]] = []
    if splits_sequence:
        # Before anything communicates: no planned module was replaced since enable.
        planned = PlannedModulesHook(model, factories + [(module, None, None) for _, module, _ in swaps], installed)
        hooks.append((model, f"{_HOOK_PREFIX}planned_modules", planned))
    # On the model itself, so that attention calls anywhere in its forward are routed, and processors set after
    # enable are routed before the forward that uses them.
    attention = AttentionRoutingHook(model) if splits_sequence else None
    if attention is not None:
        hooks.append((model, f"{_HOOK_PREFIX}attention_routing", attention))
    processors = ProcessorSwap(swaps) if swaps and splits_sequence else None
    if processors is not None:
        hooks.append((model, f"{_HOOK_PREFIX}processors", processors))
    # Before anything communicates: the inputs are on the mesh's device.
    hooks.append((model, f"{_HOOK_PREFIX}input_device", InputDeviceHook()))
    # So that its post_forward runs last of the traced hooks, on the gathered output.
    hooks.append((model, f"{_HOOK_PREFIX}replicated_output", ReplicatedOutputHook()))
    if strict:
        # The inputs are compared before anything is split.
        hooks.append((model, f"{_HOOK_PREFIX}consistency", ConsistencyHook()))
    if config.cfg_degree > 1:
        # Outside the plan's hooks: the plan splits and gathers the tokens of this group's part of the batch.
        hooks.append((model, f"{_HOOK_PREFIX}cfg_batch", CfgBatchHook()))
    if splits_sequence:
        hooks += plan_hooks
    # Cache skip metrics (First Block Cache) computed inside this model are reduced over the group.
    hooks.append((model, f"{_HOOK_PREFIX}cache_metrics", caches.CacheMetricsHook()))

    runtime = config.setup().runtime
    _check_model_device(model, runtime)

    hooks.insert(0, (model, f"{_HOOK_PREFIX}forward_context", ForwardContextHook(ModelContext(model, runtime))))
    state = _ParallelState(
        config=config,
        runtime=runtime,
        plan=plan,
        lease=PatchLease(model),
        hooks=installed,
        attention=attention,
        processors=processors,
    )
    try:
        for module, hook_name, hook in hooks:
            if hasattr(hook, "runtime"):
                hook.runtime = runtime
            _add_hook(state, module, hook_name, hook)
        if processors is not None:
            processors.install(runtime)
        if attention is not None:
            attention.install(runtime, state.lease)
        if runtime.cfg_degree == 2 and supports_sequential(model):
            # Pipelines that call the model twice per step (cond, uncond) run the two calls on the two groups.
            state.sequential_cfg = SequentialCfg(model, runtime)
            state.sequential_cfg.install(model)
        state.lease.acquire_cache_patches()
    except BaseException:
        _remove_everything(model, state)
        raise
    object.__setattr__(model, _STATE_ATTR, state)
    return model


def disable_parallelism(model):
    """Remove every hook and attention swap that `enable_parallelism` installed; returns the model.

    Afterwards the model's `forward`, its signature, its `state_dict` and its outputs are exactly what they
    were before. Calling it on a model without context parallelism is a no-op. For a pipeline, every
    component that `enable_parallelism(pipe, ...)` parallelized is restored.
    """
    if is_pipeline(model):
        from cp_hooks.vae.pipeline import disable_pipeline_vae

        disable_pipeline_vae(model)
        for _, component in getattr(model, _PIPELINE_ATTR, None) or []:
            disable_parallelism(component)
        if hasattr(model, _PIPELINE_ATTR):
            delattr(model, _PIPELINE_ATTR)
        return model
    state = model.__dict__.get(_STATE_ATTR)
    if state is None:
        return model
    _remove_everything(model, state)
    del model.__dict__[_STATE_ATTR]
    return model


def _enable_pipeline(pipe, config: ContextParallelConfig, plan, strict: bool, vae: bool | None = None):
    from cp_hooks.vae.pipeline import check_pipeline_vae, enable_pipeline_vae

    if plan is not None:
        raise ValueError(
            "A plan is per model class: enable each component of the pipeline with its own plan "
            "(enable_parallelism(pipe.transformer, config, plan=...)), or register the plan."
        )
    if is_parallelized(pipe):
        raise RuntimeError(
            "Context parallelism is already enabled on this pipeline; call disable_parallelism(pipe) first."
        )
    components = parallel_components(pipe)
    if not components:
        raise ValueError(
            f"{type(pipe).__name__} has no component with a context-parallel plan (components: "
            f"{', '.join(pipe.components)}); enable the transformer itself with a plan."
        )
    for _, component in components:  # everything that can be refused, before the first collective
        refuse_diffusers_parallelism(component)
        refuse_unsupported(component)
        get_plan(component)
    check_pipeline_vae(pipe, vae)
    done = []
    try:
        for name, component in components:
            enable_parallelism(component, config, strict=strict)
            done.append((name, component))
        enable_pipeline_vae(pipe, config, vae)
    except BaseException:
        for _, component in done:
            disable_parallelism(component)
        raise
    setattr(pipe, _PIPELINE_ATTR, done)
    return pipe


def _plan_hook_factory(full_name: str, spec):
    """How to build the plan's hook of `spec` for the module at `full_name` (again, for a replacement)."""
    if isinstance(spec, LocalAttention):
        return lambda module: LocalAttentionHook()
    if isinstance(spec, dict):
        return lambda module: SplitHook(module, full_name, spec)
    return lambda module: GatherHook(full_name, spec)


def _add_hook(state: _ParallelState, module: nn.Module, name: str, hook) -> None:
    HookRegistry.of(module).add(name, hook)
    state.hooks.append((module, name))


def _remove_everything(model: nn.Module, state: _ParallelState) -> None:
    if state.sequential_cfg is not None:
        state.sequential_cfg.remove(model)
        state.sequential_cfg = None
    if state.attention is not None:
        state.attention.remove()
    if state.processors is not None:
        state.processors.remove()
    for module, name in reversed(state.hooks):
        registry = HookRegistry.of(module, create=False)
        assert registry is not None  # every (module, name) in state.hooks was added through its registry
        registry.remove(name)
    state.hooks.clear()
    state.lease.release()


def _check_model_device(model: nn.Module, runtime: ContextParallelRuntime) -> None:
    # The device the model computes on: with offloading (diffusers' group offloading, accelerate's hooks) its
    # weights rest elsewhere, and only the execution device has to match the mesh. A model still on the CPU
    # with a GPU mesh is accepted: offloading added after enable, or `.to(device)`, decides where it computes;
    # `InputDeviceHook` refuses a forward whose inputs are not on the mesh's device.
    device = execution_device(model)
    if device is not None and device.type == "cpu" and runtime.device_type != "cpu":
        return
    if device is not None and device.type != runtime.device_type:
        raise ValueError(
            f"The model is on {device} (the device it computes on) but the context-parallel mesh communicates on "
            f"'{runtime.device_type}'. "
            "Move the model to the process group's device first (e.g. model.to(f'cuda:{local_rank}') with nccl, or "
            "offload with onload / execution device cuda:{local_rank}), or initialise the process group with a "
            "backend for the model's device."
        )

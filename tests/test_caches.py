"""diffusers' First Block Cache under context parallelism: the skip decision is global and identical on every rank.

Each rank holds a shard of the tokens, so a metric computed on the shard could tell one rank to skip the
remaining blocks and the other to run them (and their attention collectives): a hang. cp_hooks reduces the
metric over the context-parallel group (`cp_hooks.compat.caches`); these tests run a few cached
"denoising" steps in both orders of enabling and compare with the single-process cached run.
"""

import pytest
import torch

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.routing import diffusers_caches as caches
from cp_testing import FP32_TOL, make_config, rel_err

STEPS = 6
# Thresholds among the tiny models' step-to-step metrics: the cache skips some steps and not others, and on one
# step the two ranks' shard metrics lie on either side of the threshold (where the unreduced metric would hang)
# while the global one is clear of it (test_shard_metrics_would_disagree).
CASES = {
    "tiny_flux": dict(threshold=0.1835, t0=0.5, dt=0.01),
    "tiny_wan": dict(threshold=0.0565, t0=500.0, dt=10.0),
}


def _head_hook(model):
    from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

    blocks = model.transformer_blocks if hasattr(model, "transformer_blocks") else model.blocks
    return blocks[0]._diffusers_hook.get_hook(_FBC_LEADER_BLOCK_HOOK)


def _denoise(model, inputs, case):
    """STEPS cached forwards of slowly changing inputs; returns (outputs, decisions: True = computed all blocks)."""
    g = torch.Generator().manual_seed(5)
    x = inputs["hidden_states"].clone()
    outputs, decisions = [], []
    for i in range(STEPS):
        x = x + 0.01 * torch.randn(x.shape, generator=g)
        step = dict(inputs, hidden_states=x, timestep=torch.full_like(inputs["timestep"], case["t0"] - case["dt"] * i))
        with model.cache_context("cond"):
            outputs.append(model(**step)[0])
            decisions.append(_head_hook(model).state_manager.get_state().should_compute)
    model._reset_stateful_cache()
    return outputs, decisions


def _cache(model, case):
    from diffusers.hooks import FirstBlockCacheConfig

    model.enable_cache(FirstBlockCacheConfig(threshold=case["threshold"]))


def fbc_parity(builder, ring, ulysses, cache_first):
    case = CASES[builder]
    model, inputs = getattr(tiny_models, builder)()
    _cache(model, case)
    with torch.no_grad():
        reference, ref_decisions = _denoise(model, inputs, case)
    assert 0 < ref_decisions.count(False) < STEPS - 1, f"the cache must skip some steps, not all: {ref_decisions}"

    model, inputs = getattr(tiny_models, builder)()
    if cache_first:
        _cache(model, case)
        enable_parallelism(model, make_config(ring, ulysses))
    else:
        enable_parallelism(model, make_config(ring, ulysses))
        _cache(model, case)
    assert caches.is_patched()
    with torch.no_grad():
        outputs, decisions = _denoise(model, inputs, case)
    assert decisions == ref_decisions
    for out, ref in zip(outputs, reference):
        assert rel_err(out, ref) <= FP32_TOL

    # Disabled: diffusers' own metric again (this process is the only one left computing), same results.
    disable_parallelism(model)
    assert not caches.is_patched()
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    assert not getattr(FBCHeadBlockHook._should_compute_remaining_blocks, "_cp_hooks_global_metric", False)
    with torch.no_grad():
        after, after_decisions = _denoise(model, inputs, case)
    assert after_decisions == ref_decisions
    for out, ref in zip(after, reference):
        assert torch.equal(out, ref)
    return decisions, torch.stack(outputs)


@pytest.mark.parametrize("builder", sorted(CASES))
@pytest.mark.parametrize("ring, ulysses", [(1, 2), (2, 1)], ids=["ulysses2", "ring2"])
@pytest.mark.parametrize("cache_first", [True, False], ids=["cache_then_cp", "cp_then_cache"])
def test_first_block_cache(pool, builder, ring, ulysses, cache_first):
    results = pool(2).run(fbc_parity, builder, ring, ulysses, cache_first, timeout=120)
    (decisions0, out0), (decisions1, out1) = results
    assert decisions0 == decisions1
    assert torch.equal(out0, out1)


def local_metric_would_diverge(builder):
    """Each rank's metric on its own shard, at every step of the (globally decided) cached run."""
    import torch.distributed as dist

    case = CASES[builder]
    model, inputs = getattr(tiny_models, builder)()
    enable_parallelism(model, make_config(1, 2))
    _cache(model, case)
    local = []
    hook_cls = type(_head_hook(model))
    patched = hook_cls._should_compute_remaining_blocks

    def spy(self, residual):
        prev = self.state_manager.get_state().head_block_residual
        if prev is not None:
            local.append(((residual - prev).abs().mean() / prev.abs().mean()).item())
        return patched(self, residual)

    hook_cls._should_compute_remaining_blocks = spy
    try:
        with torch.no_grad():
            _denoise(model, inputs, case)
    finally:
        hook_cls._should_compute_remaining_blocks = patched
        disable_parallelism(model)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


@pytest.mark.parametrize("builder", sorted(CASES))
def test_shard_metrics_would_disagree(pool, builder):
    """The cases exercise the bug: on some step one rank's shard metric says skip and the other's says compute."""
    rank0, rank1 = pool(2).run(local_metric_would_diverge, builder, timeout=120)[0]
    threshold = CASES[builder]["threshold"]
    assert any(min(a, b) <= threshold < max(a, b) for a, b in zip(rank0, rank1)), (rank0, rank1)


def no_cp_model_unaffected():
    """A model without cp_hooks in the same process keeps diffusers' own metric while another is enabled."""
    case = CASES["tiny_flux"]
    model, inputs = tiny_models.tiny_flux()
    _cache(model, case)
    with torch.no_grad():
        reference, ref_decisions = _denoise(model, inputs, case)
    other, _ = tiny_models.tiny_flux()
    enable_parallelism(other, make_config(1, 2))
    try:
        assert caches.is_patched()
        # Only rank 0 runs the plain model: had its metric been reduced, that all-reduce would wait for a peer
        # that never joins (the pool's timeout would fail the test).
        if torch.distributed.get_rank() == 0:
            with torch.no_grad():
                outputs, decisions = _denoise(model, inputs, case)
            assert decisions == ref_decisions
            assert all(torch.equal(a, b) for a, b in zip(outputs, reference))
    finally:
        disable_parallelism(other)


def test_model_without_cp_unaffected(pool):
    pool(2).run(no_cp_model_unaffected, timeout=60)

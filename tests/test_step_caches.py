"""diffusers' step caches other than First Block Cache, under context parallelism, against one process; SeaCache
refused.

TaylorSeer, MagCache, Pyramid Attention Broadcast and FasterCache (guidance-distilled use) decide from the step
index or timestep (never from a hidden-state metric), so every rank makes the same decision; their cached and
predicted tensors are each rank's own shard. A tiny Wan pipeline runs with each cache alone and with Ulysses 2 /
ring 2, the cache enabled before or after cp_hooks; the latents must
agree (fp32: FP32_TOL relative), and the single-process run must really skip attention (fewer SDPA calls than
without the cache), so that the comparison covers the cached path. (First Block Cache: tests/test_caches.py.)
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from cp_hooks import disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL, make_config, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

STEPS = 6


class _CountSDPA(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _config(name: str, pipe):
    from diffusers.hooks import (
        FasterCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    if name == "taylorseer":
        # Wan's blocks by name: the default patterns name the ModuleList "blocks", whose forward never runs.
        return TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1, max_order=1,
                                     taylor_factors_dtype=torch.float32, cache_identifiers=[r"blocks\.\d+"])
    if name == "magcache":
        return MagCacheConfig(threshold=0.5, max_skip_steps=2, retention_ratio=0.0, num_inference_steps=STEPS,
                              mag_ratios=[1.0] + [0.9] * (STEPS - 1))
    if name == "fastercache":
        # Guidance-distilled use: Wan's pipeline calls the transformer once per branch, while FasterCache's
        # unconditional-branch skip needs both branches stacked in one batch. Attention outputs of the skipped
        # steps are extrapolated from the last two computed ones (the first steps, above 700, compute both).
        return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 700),
                                 current_timestep_callback=lambda: pipe.current_timestep, is_guidance_distilled=True,
                                 spatial_attention_block_identifiers=(r"^blocks.*attn",))
    return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                           spatial_attention_timestep_skip_range=(-1, 1001),
                                           current_timestep_callback=lambda: 500)


def _generate(pipe):
    return pipe("a red cube", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=STEPS,
                guidance_scale=1.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def cache_parity(name: str, ring: int, ulysses: int, cache_first: bool) -> tuple[float, int, int]:
    """(relative difference, SDPA calls alone without cache, with cache) for one cache, enabled before or after
    context parallelism."""
    import _tiny

    pipe = _tiny.tiny_wan_pipeline(seed=0)
    with torch.no_grad(), _CountSDPA() as plain:
        _generate(pipe)
    pipe.transformer.enable_cache(_config(name, pipe))
    with torch.no_grad(), _CountSDPA() as cached:
        reference = _generate(pipe)
    pipe.transformer.disable_cache()
    if cache_first:
        pipe.transformer.enable_cache(_config(name, pipe))  # fresh cache state for the parallel run
        enable_parallelism(pipe, make_config(ring, ulysses))
    else:
        enable_parallelism(pipe, make_config(ring, ulysses))
        pipe.transformer.enable_cache(_config(name, pipe))
    try:
        with torch.no_grad():
            parallel = _generate(pipe)
    finally:
        disable_parallelism(pipe)
        pipe.transformer.disable_cache()
    return rel_err(parallel, reference), plain.calls, cached.calls


@pytest.mark.parametrize("name", ["taylorseer", "magcache", "pab", "fastercache"])
def test_step_cache_matches_one_process(pool, name):
    pytest.importorskip("diffusers")
    for ring, ulysses, cache_first in ((1, 2, True), (2, 1, True), (1, 2, False), (2, 1, False)):
        rel, plain, cached = pool(2).run(cache_parity, name, ring, ulysses, cache_first, timeout=300)[0]
        assert cached < plain, f"{name} did not skip any attention ({cached} of {plain} SDPA calls)"
        assert rel <= FP32_TOL, (name, ring, ulysses, cache_first, rel)


def refuse_sea_cache(cache_first: bool) -> str:
    """SeaCache on an enabled model: the same ValueError on every rank, in either order; fine again after."""
    from diffusers.hooks import SeaCacheConfig

    from cp_hooks.verify.catalogue import get_entry

    model, inputs = get_entry("WanTransformer3DModel").build()
    if cache_first:
        model.enable_cache(SeaCacheConfig())
    enable_parallelism(model, make_config(1, 2))
    if not cache_first:
        model.enable_cache(SeaCacheConfig())
    try:
        # As Wan's pipeline calls it: the step's place in the schedule (SeaCache fails open without it).
        context = dict(step_index=0, num_inference_steps=4, timestep=inputs["timestep"], sigma=0.5)
        with torch.no_grad(), model.cache_context("cond", **context), pytest.raises(ValueError, match="SeaCache does"):
            model(**inputs)
    finally:
        disable_parallelism(model)
        model.disable_cache()
    from diffusers.hooks.sea_cache import SeaCacheSharedState

    assert not getattr(SeaCacheSharedState.resolve_gate, "_cp_hooks_refusal", False)  # diffusers' own again
    return "refused"


@pytest.mark.parametrize("cache_first", [True, False])
def test_sea_cache_is_refused(pool, cache_first):
    pytest.importorskip("diffusers")
    pool(2).run(refuse_sea_cache, cache_first)

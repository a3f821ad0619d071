"""Wan Animate 2 (WanAnimate2Transformer3DModel): its reference pass, KV cache and generation pass under context
parallelism, through the plan's own self-attention processor (`ContextParallelProcessor`).

The pipeline (modular_pipelines/wan_animate_2) runs, per segment, a reference pass (`kv_cache_mode="extract"`) that
fills the cache with every layer's pre-rotary reference keys and values, then denoising steps
(`kv_cache_mode="cached"`, conditional and unconditional) that attend through a flex BlockMask: every generation
token sees every generation token, and the generation frame t the reference frame t - 1. Under context parallelism
each rank caches its part of the reference and attends over [its generation shard, that part] with the whole
mask. Checked against one process (fp32, relative 1e-5) for both passes in Ulysses 2 and ring 2 (both rotations),
with shards that the degrees divide and, with the anything flags, uneven ones; a cache written by one process is
served too (the catalogue's case). Also: a mask that lets every query see every reference key fails (the mask
matters), uneven key counts without the anything flags are refused, and the original processors come back at
disable. Outputs only: the one-process reference attends through flex attention, which has no CPU backward.
"""

import pytest
import torch
import torch.distributed as dist

from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.catalogue import get_entry
from cp_hooks.models import wan_animate
from cp_hooks.models.wan_animate import (WanAnimate2ContextParallelProcessor, animate2_extract,
                                         animate2_generate)
from cp_testing import FP32_TOL, make_config, rel_err

# (frames, latent height, latent width, segment frames): 24 generation and 16 reference tokens; and 9 and 6, which
# two ranks split 5 + 4 and 3 + 3 (8 and 7 keys in the generation pass).
GEOMETRIES = {"even": (2, 4, 8, 5), "uneven": (2, 2, 6, 5)}


def _passes(model, extract, generate, uncond):
    """The pipeline's order: the reference pass fills the cache, the conditional and unconditional steps read it."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cache = WanAnimate2KVCache(len(model.blocks))
    with torch.no_grad():
        first = model(**dict(extract, kv_cache=cache))[0][0]
        cond = model(**dict(generate, kv_cache=cache))[0][0]
        negative = model(**dict(uncond, kv_cache=cache))[0][0]
    return first, cond, negative


def _inputs(entry, geometry, seed=3):
    frames, height, width, segment = GEOMETRIES[geometry]
    g = torch.Generator().manual_seed(seed)
    extract = animate2_extract(entry.config, g, frames, height, width)
    generate = animate2_generate(entry.config, g, frames, height, width, segment)
    uncond = dict(generate, encoder_hidden_states=[torch.randn(3, entry.config["text_dim"], generator=g)],
                  is_uncondtion=True)
    return extract, generate, uncond


def passes_match(ring, ulysses, rotate):
    entry = get_entry("WanAnimate2Transformer3DModel")
    model, _ = entry.build("extract")
    worst = {}
    for geometry in GEOMETRIES:
        extract, generate, uncond = _inputs(entry, geometry)
        ref = _passes(model, extract, generate, uncond)
        whole_cache = animate2_generate(entry.config, torch.Generator().manual_seed(9), *GEOMETRIES[geometry])
        with torch.no_grad():
            ref_whole = model(**whole_cache)[0][0]
        originals = [block.self_attn.processor for block in model.blocks]
        uneven = geometry == "uneven"
        config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=uneven and ulysses > 1,
                             ring_anything=uneven and ring > 1)
        enable_parallelism(model, config)
        try:
            assert all(isinstance(b.self_attn.processor, WanAnimate2ContextParallelProcessor) for b in model.blocks)
            out = _passes(model, extract, generate, uncond)
            with torch.no_grad():
                out_whole = model(**whole_cache)[0][0]
        finally:
            disable_parallelism(model)
        assert [b.self_attn.processor for b in model.blocks] == originals, "processors not put back"
        for name, a, b in zip(("extract", "cond", "uncond", "whole cache"), (*out, out_whole), (*ref, ref_whole)):
            err = rel_err(a, b)
            assert err <= FP32_TOL, f"rank {dist.get_rank()} {geometry} {name}: {err:.2e}"
            worst[f"{geometry} {name}"] = err
    return worst


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")])
def test_passes_match_one_process(pool, ring, ulysses, rotate):
    for worst in pool(2).run(passes_match, ring, ulysses, rotate, timeout=300):
        print(ring, ulysses, rotate, {k: f"{v:.1e}" for k, v in worst.items()})
        assert max(worst.values()) <= FP32_TOL, worst


def without_the_mask():
    """Negative control: the generation pass with every reference key visible to every query."""
    entry = get_entry("WanAnimate2Transformer3DModel")
    model, _ = entry.build("extract")
    extract, generate, uncond = _inputs(entry, "even")
    ref = _passes(model, extract, generate, uncond)
    mask = wan_animate._generation_mask
    wan_animate._generation_mask = lambda *args: torch.ones_like(mask(*args))
    enable_parallelism(model, make_config(1, 2))
    try:
        out = _passes(model, extract, generate, uncond)
    finally:
        disable_parallelism(model)
        wan_animate._generation_mask = mask
    return [rel_err(a, b) for a, b in zip(out, ref)]


def test_the_mask_matters(pool):
    for extract, cond, uncond in pool(2).run(without_the_mask, timeout=300):
        print(f"without the mask: extract {extract:.1e}, cond {cond:.1e}, uncond {uncond:.1e}")
        assert extract <= FP32_TOL  # the reference pass has no mask
        assert cond > 1e-2 and uncond > 1e-2, (cond, uncond)


def uneven_without_anything():
    entry = get_entry("WanAnimate2Transformer3DModel")
    model, _ = entry.build("extract")
    extract, generate, uncond = _inputs(entry, "uneven")
    enable_parallelism(model, make_config(2, 1, ring_anything=False))
    try:
        _passes(model, extract, generate, uncond)
    except ValueError as error:
        return str(error)
    finally:
        disable_parallelism(model)
    return ""


def test_uneven_keys_without_anything_are_refused_on_every_rank(pool):
    for message in pool(2).run(uneven_without_anything, timeout=300):
        assert "anything" in message, message

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
disable. These compare outputs with diffusers' own processor, whose flex attention has no CPU backward; the
generation pass's gradients are checked (`GENERATION_ENTRIES`, `cp_hooks check ... --backward`) against
WanAnimate2ReferenceProcessor, diffusers' processor with that attention computed by SDPA with the same mask: its
outputs equal diffusers' and its mask the BlockMask's (below), and it has a backward.
"""

import pytest
import torch
import torch.distributed as dist

from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.plans import wan_animate as wan_animate_plan
from cp_hooks.plans.wan_animate import WanAnimate2ContextParallelProcessor
from cp_hooks.verify.catalogue import get_entry
from cp_hooks.verify.models import wan_animate
from cp_hooks.verify.models.wan_animate import (
    GENERATION_ENTRIES,
    WanAnimate2ReferenceProcessor,
    animate2_extract,
    animate2_generate,
)
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
    mask = wan_animate_plan._generation_mask
    wan_animate_plan._generation_mask = lambda *args: torch.ones_like(mask(*args))
    enable_parallelism(model, make_config(1, 2))
    try:
        out = _passes(model, extract, generate, uncond)
    finally:
        disable_parallelism(model)
        wan_animate_plan._generation_mask = mask
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


# --- The generation pass's one-process reference for gradients: the dense-mask twin of diffusers' processor --------


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_reference_twin_matches_diffusers_processor(geometry):
    """Extract, then the conditional and unconditional generation steps: the twin's outputs are diffusers'."""
    entry = get_entry("WanAnimate2Transformer3DModel")
    model, _ = entry.build("extract")
    extract, generate, uncond = _inputs(entry, geometry)
    ref = _passes(model, extract, generate, uncond)
    originals = [block.self_attn.processor for block in model.blocks]
    GENERATION_ENTRIES[0].prepare(model, torch.Generator())
    assert all(isinstance(b.self_attn.processor, WanAnimate2ReferenceProcessor) for b in model.blocks)
    out = _passes(model, extract, generate, uncond)
    errors = [rel_err(a, b) for a, b in zip(out, ref)]
    print(geometry, "twin vs diffusers (extract, cond, uncond):", [f"{e:.1e}" for e in errors])
    assert max(errors) <= 1e-6, errors
    for block, original in zip(model.blocks, originals):
        block.self_attn.set_processor(original)
    with torch.no_grad():  # the mask matters at this geometry: diffusers' differs from attending to every key
        mask = wan_animate._packed_mask
        wan_animate._packed_mask = lambda *args: torch.ones_like(mask(*args))
        try:
            GENERATION_ENTRIES[0].prepare(model, torch.Generator())
            unmasked = model(**dict(generate, kv_cache=_filled_cache(model, extract)))[0][0]
        finally:
            wan_animate._packed_mask = mask
    assert rel_err(unmasked, ref[1]) > 1e-2


def _filled_cache(model, extract):
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cache = WanAnimate2KVCache(len(model.blocks))
    with torch.no_grad():
        model(**dict(extract, kv_cache=cache))
    return cache


@pytest.mark.parametrize("origin_frames,hw", [(2, 8), (2, 3), (3, 100)])
def test_reference_twin_mask_is_the_block_mask(origin_frames, hw):
    """The twin's token mask is the BlockMask's mask_mod at every (query, key) of the packed buffers, and per
    128 x 128 block its `to_dense()` (the pipeline's geometries fit one block; (3, 100) spans several)."""
    from diffusers import WanAnimate2Transformer3DModel

    block_mask = WanAnimate2Transformer3DModel.create_mask(None, origin_frames, hw, "cpu")
    mask = wan_animate._packed_mask(origin_frames, hw, "cpu")
    rows, cols = mask.shape
    assert (1, 1, rows, cols) == tuple(block_mask.shape)
    zero = torch.zeros((), dtype=torch.long)
    assert torch.equal(block_mask.mask_mod(zero, zero, torch.arange(rows)[:, None], torch.arange(cols)[None]), mask)
    blocks = mask.unflatten(1, (cols // 128, 128)).unflatten(0, (rows // 128, 128)).any(dim=3).any(dim=1)
    assert torch.equal(block_mask.to_dense()[0, 0].bool(), blocks)


def test_reference_twin_has_a_backward():
    """The generation entry's model (the twin installed by `prepare`) back-propagates to every parameter on CPU."""
    model, inputs = GENERATION_ENTRIES[0].build()
    assert all(isinstance(b.self_attn.processor, WanAnimate2ReferenceProcessor) for b in model.blocks)
    model(**inputs)[0][0].square().sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if "self_attn" in name}
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


def generation_gradients(ring, ulysses, rotate):
    from cp_hooks.verify.checker import compare_parallel_backward
    from cp_hooks.verify.models.wan_animate import GENERATION_ENTRIES

    entry = GENERATION_ENTRIES[0]
    model, inputs = entry.build()
    config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=entry.anything and ulysses > 1,
                         ring_anything=entry.anything and ring > 1)
    diffs = compare_parallel_backward(model, inputs, config, tol=FP32_TOL)
    assert any(d.kind == "parameter" for d in diffs), "no parameter received a gradient"
    bad = [f"{d.kind} {d.name}: {d.missing or f'{d.rel:.2e}'}" for d in diffs if not d.passed]
    assert not bad, f"rank {dist.get_rank()}: " + "; ".join(bad)
    return max(d.rel for d in diffs if not d.missing)


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
def test_generation_pass_gradients_match_the_twin(pool, ring, ulysses, rotate):
    # The generation pass's gradients, cp_hooks' processor against the dense-mask twin in one process
    # (diffusers' flex attention has no CPU backward; the twin's forward equals it, tested above).
    assert max(pool(2).run(generation_gradients, ring, ulysses, rotate)) <= FP32_TOL

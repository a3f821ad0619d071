"""`torch.compile(fullgraph=True)` of a context-parallel model: one graph, the single-process result.

Each context-parallel attention call and each plan gather is a registered operator (cp_hooks.attention.ops,
cp_hooks.sharding), so dynamo traces the whole model — hooks, splits, gathers, attention — without a graph
break; `fullgraph=True` would raise on any. Backend "aot_eager" runs dynamo and AOT autograd (forward and
backward graphs) without inductor's C++ code generation, which takes 15-40 s per graph on two cores; the
benchmark compiles with inductor. Tolerance: fp32, max |difference| / max(1, max |reference|) <= 1e-5.
"""

import pytest
import torch
import torch.distributed as dist

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism, reduce_gradients
from cp_testing import FP32_TOL, make_config, rel_err

BACKEND = "aot_eager"


def _loss(out, weight):
    return (out * weight).sum()


def _reference(model, inputs, weight):
    out = model(**inputs)[0]
    _loss(out, weight).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.detach(), grads


def _check_gradients(model, config, ref_grads):
    reduce_gradients(model, config)
    worst = max(rel_err(p.grad, ref_grads[n]) for n, p in model.named_parameters() if n in ref_grads)
    assert worst <= FP32_TOL, f"rank {dist.get_rank()}: gradient error {worst:.2e}"
    model.zero_grad()
    return worst


def compiled_parity(ring, ulysses, rotate, anything, regional=False):
    """Forward and backward of the compiled model against one process; then two more denoising-like steps
    (new timestep and latents, same shapes) that must not recompile."""
    torch._dynamo.reset()
    model, inputs = tiny_models.tiny_flux(text_len=7 if anything else 8)
    weight = torch.randn(inputs["hidden_states"].shape, generator=torch.Generator().manual_seed(3))
    reference, ref_grads = _reference(model, inputs, weight)
    flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1) if anything else {}
    config = make_config(ring, ulysses, rotate_method=rotate, **flags)
    enable_parallelism(model, config)
    try:
        if regional:
            model.compile_repeated_blocks(fullgraph=True, backend=BACKEND)
            compiled = model
        else:
            compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
        out = compiled(**inputs)[0]
        assert rel_err(out, reference) <= FP32_TOL, f"rank {dist.get_rank()}: forward error {rel_err(out, reference)}"
        _loss(out, weight).backward()
        grad_err = _check_gradients(model, config, ref_grads)
        with torch.no_grad():
            compiled(**inputs)  # the inference graph (grad mode is part of a graph's guards)
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
            for step in range(2):  # what changes between denoising steps: values, not shapes
                g = torch.Generator().manual_seed(10 + step)
                step_inputs = dict(inputs, timestep=torch.rand(1, generator=g),
                                   hidden_states=torch.randn(inputs["hidden_states"].shape, generator=g))
                compiled(**step_inputs)
    finally:
        disable_parallelism(model)
    return grad_err


MODES_2 = [(1, 2, "allgather", False), (2, 1, "allgather", False), (2, 1, "alltoall", False),
           (1, 2, "allgather", True), (2, 1, "alltoall", True)]


@pytest.mark.parametrize("ring,ulysses,rotate,anything", MODES_2)
def test_fullgraph_two_ranks(pool, ring, ulysses, rotate, anything):
    pool(2).run(compiled_parity, ring, ulysses, rotate, anything, timeout=300)


@pytest.mark.parametrize("ring,ulysses,rotate,anything", [(2, 2, "alltoall", False), (2, 2, "allgather", True)])
def test_fullgraph_hybrid(pool, ring, ulysses, rotate, anything):
    pool(4).run(compiled_parity, ring, ulysses, rotate, anything, timeout=300)


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
def test_compile_repeated_blocks(pool, ring, ulysses, rotate):
    pool(2).run(compiled_parity, ring, ulysses, rotate, False, True, timeout=300)


def test_degree_one_mesh(pool):
    """A mesh whose dimensions are all 1 runs the whole context-parallel path with nothing to exchange: the
    one-GPU tests' functions (tests/test_cuda_one_rank.py), here on one CPU rank with aot_eager."""
    from test_cuda_one_rank import on_cpu

    for regional in (False, True):
        [(result, _)] = pool(1).run(on_cpu, "compiled_parity", None, "float32", True, regional, timeout=300)
        errors = [v for k, v in result.items() if k in ("forward", "gradients") or k.startswith("step")]
        assert all(e <= FP32_TOL for e in errors), result
        assert result["attention calls routed"] > 0 and result["graph breaks"] == 0, result
    [errors] = pool(1).run(on_cpu, "dynamic_two_resolutions", timeout=300)
    assert max(errors) <= FP32_TOL, errors


def dynamic_resolutions(ring, ulysses):
    """dynamic=True: one graph serves two resolutions, each equal to its single-process output."""
    torch._dynamo.reset()
    config = make_config(ring, ulysses)
    model = None
    with torch.no_grad():
        cases = []
        for height in (8, 12):
            # Sizes that differ from each other (else dynamo's duck sizing ties them, and a new resolution that
            # unties them recompiles): text 10, width 6, heights 8 and 12.
            model_h, inputs = tiny_models.tiny_flux(height=height, width=6, text_len=10)
            model = model or model_h  # the same seed: one model for both resolutions
            cases.append((inputs, model(**inputs)[0]))
        enable_parallelism(model, config)
        try:
            compiled = torch.compile(model, fullgraph=True, backend=BACKEND, dynamic=True)
            first = rel_err(compiled(**cases[0][0])[0], cases[0][1])
            with torch._dynamo.config.patch(error_on_recompile=True):
                second = rel_err(compiled(**cases[1][0])[0], cases[1][1])
        finally:
            disable_parallelism(model)
    assert max(first, second) <= FP32_TOL, (first, second)
    return first, second


def test_dynamic_shapes_one_graph_two_resolutions(pool):
    pool(2).run(dynamic_resolutions, 1, 2, timeout=300)
    pool(2).run(dynamic_resolutions, 2, 1, timeout=300)


def catalogue_parity(class_name, case, ring, ulysses):
    """A catalogued model compiled with fullgraph=True: forward and gradients against one process."""
    from cp_hooks.verify.catalogue import get_entry

    torch._dynamo.reset()
    entry = get_entry(class_name)
    model, inputs = entry.build(case)
    out = model(**inputs)[0]
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    reference, ref_grads = _reference(model, inputs, weight)
    flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1) if entry.anything else {}
    config = make_config(ring, ulysses, rotate_method="alltoall", **flags)
    enable_parallelism(model, config)
    try:
        out = torch.compile(model, fullgraph=True, backend=BACKEND)(**inputs)[0]
        assert rel_err(out, reference) <= FP32_TOL, f"{class_name}: forward error {rel_err(out, reference):.2e}"
        _loss(out, weight).backward()
        return _check_gradients(model, config, ref_grads)
    finally:
        disable_parallelism(model)


# QwenImage: a key-padding mask on the joint text + image sequence, uneven text (anything flags).
# PixArt: processors that call torch's SDPA directly (routed by the SDPA guard).
# HunyuanVideo: the token refiner's plain-SDPA processor beside dispatch-routed ones, and `unflatten` in its
# processors (which dynamo cannot trace under the SDPA router's torch-function mode; the router under compile:
# tests/test_attention_routing.py).
@pytest.mark.parametrize("class_name,case,ring,ulysses", [("QwenImageTransformer2DModel", "t2i", 1, 2),
                                                          ("PixArtTransformer2DModel", "t2i", 2, 1),
                                                          ("HunyuanVideoTransformer3DModel", "t2v", 1, 2)])
def test_fullgraph_catalogue_models(pool, class_name, case, ring, ulysses):
    pool(2).run(catalogue_parity, class_name, case, ring, ulysses, timeout=300)

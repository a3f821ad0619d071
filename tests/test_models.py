"""Tiny diffusers models under context parallelism against the same model in one process (fp32)."""

import copy
import inspect
import sys

import pytest
import torch
import torch.distributed as dist

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL, make_config, rel_err


def model_parity(builder, build_kwargs, ring, ulysses, rotate="allgather", anything=False, backward=False):
    model, inputs = getattr(tiny_models, builder)(**build_kwargs)
    flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1) if anything else {}
    config = make_config(ring, ulysses, rotate_method=rotate, **flags)
    with torch.no_grad():
        reference = model(**inputs)[0]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    signature = inspect.signature(model.forward)

    enable_parallelism(model, config)
    with pytest.raises(RuntimeError, match="disable_parallelism"):
        copy.deepcopy(model)  # the copy would carry hooks bound to this model's groups: refused, not aliased
    with torch.set_grad_enabled(backward):
        out = model(**inputs)[0]
    err = rel_err(out, reference)
    assert err <= FP32_TOL, f"rank {dist.get_rank()}: {builder} error {err:.2e} > {FP32_TOL}"

    grad_err = None
    if backward:
        from cp_hooks import reduce_gradients

        out.square().mean().backward()
        reduce_gradients(model, config)
        cp_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        disable_parallelism(model)
        model(**inputs)[0].square().mean().backward()
        grad_err = max(rel_err(cp_grads[n], p.grad) for n, p in model.named_parameters() if p.grad is not None)
        assert set(cp_grads) == {n for n, p in model.named_parameters() if p.grad is not None}
        assert grad_err <= FP32_TOL, f"rank {dist.get_rank()}: gradient error {grad_err:.2e}"
    else:
        disable_parallelism(model)
    # Enabling never changes a weight; disabling restores the module, its processors and outputs exactly.
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in m.__dict__ and "_cp_hook_registry" not in m.__dict__ and not m._forward_pre_hooks
               and not m._forward_hooks for m in model.modules())
    assert inspect.signature(model.forward) == signature
    processors = [m.processor for m in model.modules() if hasattr(getattr(m, "processor", None), "_parallel_config")]
    assert processors and all("_parallel_config" not in p.__dict__ for p in processors)
    assert all(not hasattr(sys.modules[type(p).__module__].dispatch_attention_fn, "__cp_hooks_original__")
               for p in processors)
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], reference)
        twin = copy.deepcopy(model)  # after disabling, a deep copy is an independent model
        next(twin.parameters()).add_(1.0)
        assert torch.equal(model(**inputs)[0], reference)
    return err, grad_err


MODES_2 = [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")]
MODES_4 = [(1, 4, "allgather"), (4, 1, "alltoall"), (2, 2, "allgather"), (2, 2, "alltoall")]


@pytest.mark.parametrize("ring,ulysses,rotate", MODES_2)
@pytest.mark.parametrize("builder,kwargs", [("tiny_flux", {}), ("tiny_wan", {}), ("tiny_wan", {"image_len": 6})])
def test_two_ranks(pool, builder, kwargs, ring, ulysses, rotate):
    pool(2).run(model_parity, builder, kwargs, ring, ulysses, rotate)


@pytest.mark.parametrize("ring,ulysses,rotate", MODES_4)
@pytest.mark.parametrize("builder,kwargs", [("tiny_flux", {}), ("tiny_wan", {})])
def test_four_ranks(pool, builder, kwargs, ring, ulysses, rotate):
    pool(4).run(model_parity, builder, kwargs, ring, ulysses, rotate)


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
@pytest.mark.parametrize("builder", ["tiny_flux", "tiny_wan"])
def test_gradients_two_ranks(pool, builder, ring, ulysses, rotate):
    pool(2).run(model_parity, builder, {}, ring, ulysses, rotate, backward=True)


@pytest.mark.parametrize("ring,ulysses,rotate", [(2, 2, "alltoall"), (4, 1, "allgather")])
def test_gradients_four_ranks(pool, ring, ulysses, rotate):
    pool(4).run(model_parity, "tiny_flux", {}, ring, ulysses, rotate, backward=True)


# ----------------------------------------------------------------------------- uneven (anything modes)
UNEVEN_2 = [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")]


@pytest.mark.parametrize("ring,ulysses,rotate", UNEVEN_2)
@pytest.mark.parametrize(
    "builder,kwargs",
    [
        ("tiny_flux", {"text_len": 7, "height": 7, "width": 5}),  # odd text and odd image token counts
        ("tiny_flux", {"text_len": 1, "height": 3, "width": 3, "heads": 3}),  # 1 text token: rank 1 holds none
        ("tiny_wan", {"frames": 3, "height": 6, "width": 6, "text_len": 9}),  # 27 video tokens
    ],
)
def test_uneven_two_ranks(pool, builder, kwargs, ring, ulysses, rotate):
    pool(2).run(model_parity, builder, kwargs, ring, ulysses, rotate, anything=True)


@pytest.mark.parametrize("rotate", ["allgather", "alltoall"])
def test_uneven_hybrid(pool, rotate):
    pool(4).run(model_parity, "tiny_flux", {"text_len": 7, "height": 7, "width": 5, "heads": 6}, 2, 2, rotate,
                anything=True)


def test_wan_i2v_769_context_tokens(pool):
    # Wan 2.1 I2V: 512 text + 257 image tokens = 769 context tokens (replicated: cross-attention is local).
    pool(2).run(model_parity, "tiny_wan", {"text_len": 512, "image_len": 257, "frames": 3, "height": 6, "width": 6},
                1, 2, "allgather", anything=True)


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
def test_uneven_gradients(pool, ring, ulysses, rotate):
    pool(2).run(model_parity, "tiny_flux", {"text_len": 7, "height": 7, "width": 5, "heads": 3}, ring, ulysses,
                rotate, anything=True, backward=True)

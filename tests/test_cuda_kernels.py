"""CUDA local-attention kernels: blockwise attention with LSE, merged, and its backward, against float64 SDPA.

This is the compute of a ring step on one GPU (multi-rank paths are tested with gloo on CPU; nccl needs
one GPU per rank). Skipped without CUDA; run on a GPU machine with `python -m pytest tests/test_cuda_kernels.py`.
The last tests, on what happens when a kernel refuses or runs out of memory, run anywhere: they call the CUDA
kernel loop with CPU tensors and stand-ins for the aten kernels.
"""

import logging
import types

import pytest
import torch
import torch.nn.functional as F

import cp_hooks.attention.local as local
from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward
from cp_hooks.attention.masks import key_bias_from_mask
from cp_hooks.attention.merge import merge_partial_

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# max |blockwise - float64 reference| relative to the output scale
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _reference(q, k, v, mask, is_causal, grad):
    q, k, v = (t.double().detach().requires_grad_() for t in (q, k, v))
    m = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m,
                                         is_causal=is_causal).transpose(1, 2)
    out.backward(grad.double())
    return out, q.grad, k.grad, v.grad


def _err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1)).item()


@pytest.fixture
def only_kernel(monkeypatch):
    """Force one CUDA kernel (or the math path) and record whether the math path ran."""
    import cp_hooks.attention.local as local

    used_math = []
    for name in ("_math_forward", "_math_backward"):
        original = getattr(local, name)
        monkeypatch.setattr(local, name, lambda *a, _f=original, _n=name: used_math.append(_n) or _f(*a))

    def force(kernel):
        monkeypatch.setattr(local, "CUDA_KERNELS", () if kernel == "math" else (kernel,))
        monkeypatch.setattr(local, "CUDA_BACKWARD_KERNELS", (kernel,) if kernel in ("cudnn", "flash") else ())
        return used_math

    return force


@needs_cuda
@pytest.mark.parametrize("kernel", ["cudnn", "flash", "efficient", "math"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_blockwise_attention_matches_sdpa(only_kernel, kernel, dtype, masked, blocks, head_dim):
    if kernel in ("cudnn", "flash") and (masked or dtype == torch.float32):
        pytest.skip(f"{kernel} takes no mask and no fp32")
    used_math = only_kernel(kernel)
    torch.manual_seed(0)
    b, s, h = 2, 384, 8
    q, k, v, grad = (torch.randn(b, s, h, head_dim, device="cuda", dtype=dtype) for _ in range(4))
    mask = None
    if masked:
        mask = torch.ones(b, s, dtype=torch.bool, device="cuda")
        mask[0, s // 3:] = False  # whole later blocks of sample 0 are padding
    ref_out, ref_dq, ref_dk, ref_dv = _reference(q, k, v, mask, False, grad)

    bias = key_bias_from_mask(mask, b, s)
    kb, vb = k.tensor_split(blocks, dim=1), v.tensor_split(blocks, dim=1)
    bb = [None] * blocks if bias is None else bias.tensor_split(blocks, dim=1)
    out = lse = None
    for i in range(blocks):
        o, block_lse = attention_with_lse(q, kb[i], vb[i], bb[i])
        out, lse = (o.float().clone(), block_lse) if out is None else merge_partial_(out, lse, o, block_lse)
    dq = torch.zeros_like(q, dtype=torch.float32)
    dks, dvs = [], []
    for i in range(blocks):
        gq, gk, gv = attention_with_lse_backward(grad, q, kb[i], vb[i], out, lse, bb[i])
        dq += gq.float()
        dks.append(gk)
        dvs.append(gv)
    tol = TOLERANCE[dtype]
    # The efficient kernel serves forwards only; its blocks' backward is the math path (see local.py).
    assert ("_math_forward" in used_math) == (kernel == "math"), f"{kernel} refused these inputs"
    assert ("_math_backward" in used_math) == (kernel in ("math", "efficient")), f"{kernel} refused the backward"
    assert _err(out, ref_out) <= tol
    assert _err(dq, ref_dq) <= tol
    assert _err(torch.cat(dks, 1), ref_dk) <= tol
    assert _err(torch.cat(dvs, 1), ref_dv) <= tol


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_block(dtype):
    torch.manual_seed(1)
    q, k, v, grad = (torch.randn(1, 256, 4, 64, device="cuda", dtype=dtype) for _ in range(4))
    ref_out, ref_dq, ref_dk, ref_dv = _reference(q, k, v, None, True, grad)
    out, lse = attention_with_lse(q, k, v, is_causal=True)
    dq, dk, dv = attention_with_lse_backward(grad, q, k, v, out, lse, is_causal=True)
    tol = TOLERANCE[dtype]
    for actual, expected in ((out, ref_out), (dq, ref_dq), (dk, ref_dk), (dv, ref_dv)):
        assert _err(actual, expected) <= tol


@needs_cuda
def test_default_kernels_avoid_the_math_path(only_kernel):
    """With the default kernel order, bf16 attention with and without a mask never falls back to math."""
    import cp_hooks.attention.local as local

    used_math = only_kernel("efficient")
    local.CUDA_KERNELS = ("cudnn", "flash", "efficient")
    local.CUDA_BACKWARD_KERNELS = ("cudnn", "flash")
    q = torch.randn(1, 128, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=False)
    out, lse = attention_with_lse(q, q, q)
    attention_with_lse_backward(q, q, q, q, out, lse)
    bias = key_bias_from_mask(torch.ones(1, 128, dtype=torch.bool, device="cuda"), 1, 128)
    attention_with_lse(q, q, q, bias)
    assert not used_math


# ------------------------------------------------------------------ refusals and out-of-memory, on any machine
_FORWARD = ("_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention")
_BACKWARD = ("_scaled_dot_product_cudnn_attention_backward", "_scaled_dot_product_flash_attention_backward")


@pytest.fixture
def kernels(monkeypatch):
    """Stand-ins for the CUDA aten kernels: `kernels(name=exception, ...)`; the ones not named refuse.

    Returns the names called, in order. Also resets the record of logged fallbacks.
    """
    monkeypatch.setattr(local, "_MATH_FALLBACKS_LOGGED", set())
    monkeypatch.setattr(local, "CUDA_KERNELS", ("cudnn", "flash", "efficient"))
    monkeypatch.setattr(local, "CUDA_BACKWARD_KERNELS", ("cudnn", "flash"))

    def install(**raises):
        called = []

        def kernel(name):
            def run(*args, **kwargs):
                called.append(name)
                raise raises.get(name, RuntimeError(f"No available kernel for {name}.\nDetails follow."))
            return run

        monkeypatch.setattr(local, "_aten", types.SimpleNamespace(**{n: kernel(n) for n in _FORWARD + _BACKWARD}))
        return called

    return install


def _blocks(dtype=torch.bfloat16, masked=False):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 16, 2, 8, dtype=dtype) for _ in range(3))
    bias = key_bias_from_mask(torch.ones(1, 16, dtype=torch.bool), 1, 16) if masked else None
    return q, k, v, bias


OUT_OF_MEMORY = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB"),
    RuntimeError("CUDA error: out of memory"),  # what some kernels raise instead
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["OutOfMemoryError", "RuntimeError"])
@pytest.mark.parametrize("kernel", ["cudnn", "flash", "efficient"])
def test_forward_out_of_memory_is_raised_not_swallowed(kernels, error, kernel):
    name = dict(zip(("cudnn", "flash", "efficient"), _FORWARD))[kernel]
    called = kernels(**{name: error})
    q, k, v, bias = _blocks()
    with pytest.raises(type(error), match="out of memory"):
        local._cuda_forward(q, k, v, bias, 0.5, False)
    assert called[-1] == name  # nothing tried after it, the math path least of all


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["OutOfMemoryError", "RuntimeError"])
@pytest.mark.parametrize("kernel", ["cudnn", "flash"])
def test_backward_out_of_memory_is_raised_not_swallowed(kernels, error, kernel):
    name = dict(zip(("cudnn", "flash"), _BACKWARD))[kernel]
    called = kernels(**{name: error})
    q, k, v, _ = _blocks()
    lse = torch.zeros(1, 2, 16)
    with pytest.raises(type(error), match="out of memory"):
        local._cuda_backward(q, q, k, v, q, lse, None, 0.5, False)
    assert called[-1] == name


def test_refusals_fall_back_to_math_logged_once_per_reason(kernels, caplog):
    called = kernels()  # every kernel refuses
    q, k, v, bias = _blocks(masked=True)
    caplog.set_level(logging.WARNING, logger=local.__name__)
    for _ in range(3):
        assert local._cuda_forward(q, k, v, None, 0.5, False) == (None, None)
        assert local._cuda_backward(q, q, k, v, q, torch.zeros(1, 2, 16), None, 0.5, False) is None
    assert called[:5] == list(_FORWARD + _BACKWARD)  # each kernel in order, then the math path
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one for the forward, one for the backward: not one per call
    forward, backward = messages
    assert "forward falls back to the math path" in forward
    assert "cudnn: RuntimeError: No available kernel for _scaled_dot_product_cudnn_attention." in forward
    assert "efficient: RuntimeError: No available kernel" in forward and "Details" not in forward
    assert "backward falls back to the math path" in backward and "flash: RuntimeError" in backward

    # A mask: cudnn and flash are not tried, and the efficient kernel's refusal is a new reason.
    assert local._cuda_forward(q, k, v, bias, 0.5, False) == (None, None)
    assert local._cuda_backward(q, q, k, v, q, torch.zeros(1, 2, 16), bias, 0.5, False) is None
    assert called[-1] == _FORWARD[-1]
    new = [r.getMessage() for r in caplog.records][2:]
    assert len(new) == 2 and "cudnn: takes no mask" in new[0] and "efficient: RuntimeError" in new[0]
    assert "cudnn, flash: take no mask" in new[1]


def test_a_kernel_that_runs_needs_no_fallback(kernels, caplog):
    """The efficient kernel runs after cudnn and flash refused: its result, and nothing logged."""
    called = kernels()
    q, k, v, _ = _blocks()
    out, lse = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 32)  # (B, H, S, D); the LSE padded to 32

    def efficient(*args, **kwargs):
        called.append("efficient")
        return out, lse

    local._aten._scaled_dot_product_efficient_attention = efficient
    caplog.set_level(logging.WARNING, logger=local.__name__)
    got_out, got_lse = local._cuda_forward(q, k, v, None, 0.5, False)
    assert got_out is out and torch.equal(got_lse, lse)
    assert called == [_FORWARD[0], _FORWARD[1], "efficient"] and not caplog.records

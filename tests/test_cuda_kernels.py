"""CUDA local-attention kernels: blockwise attention with LSE, merged, and its backward, against float64 SDPA.

This is the compute of a ring step on one GPU (multi-rank paths are tested with gloo on CPU; nccl needs
one GPU per rank). Skipped without CUDA; run on a GPU machine with `python -m pytest tests/test_cuda_kernels.py`.
"""

import pytest
import torch
import torch.nn.functional as F

from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward
from cp_hooks.attention.masks import key_bias_from_mask
from cp_hooks.attention.merge import merge_partial_

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

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
        o, l = attention_with_lse(q, kb[i], vb[i], bb[i])
        out, lse = (o.float().clone(), l) if out is None else merge_partial_(out, lse, o, l)
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

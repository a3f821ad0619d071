"""CUDA local-attention kernels: blockwise attention with LSE, merged, and its backward, against float64 SDPA.

This is the compute of a ring step on one GPU (multi-rank paths are tested with gloo on CPU; nccl needs
one GPU per rank). Skipped without CUDA; run on a GPU machine with `python -m pytest tests/test_cuda_kernels.py`.
"""

import pytest
import torch
import torch.nn.functional as F

from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward
from cp_hooks.attention.masks import key_bias_from_mask
from cp_hooks.attention.merge import merge_partial

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_blockwise_attention_matches_sdpa(dtype, masked, blocks, head_dim):
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
        out, lse = (o.float(), l) if out is None else merge_partial(out, lse, o, l)
    dq = torch.zeros_like(q, dtype=torch.float32)
    dks, dvs = [], []
    for i in range(blocks):
        gq, gk, gv = attention_with_lse_backward(grad, q, kb[i], vb[i], out, lse, bb[i])
        dq += gq.float()
        dks.append(gk)
        dvs.append(gv)
    tol = TOLERANCE[dtype]
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


def test_which_kernels_run():
    """Report (and pin) that the fast kernels, not the math fallback, serve the common cases."""
    import cp_hooks.attention.local as local

    calls = []
    original = local._math_forward
    local._math_forward = lambda *a: calls.append("math") or original(*a)
    try:
        q = torch.randn(1, 128, 4, 64, device="cuda", dtype=torch.bfloat16)
        attention_with_lse(q, q, q)
        attention_with_lse(q, q, q, key_bias_from_mask(torch.ones(1, 128, dtype=torch.bool, device="cuda"), 1, 128))
    finally:
        local._math_forward = original
    assert calls == [], "bf16 attention fell back to the math path"

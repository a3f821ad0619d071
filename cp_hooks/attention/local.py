"""Attention of a query block against one key/value block, returning the log-sum-exp, with a backward.

Layout legend: B batch, S sequence (Sq queries, Sk keys), H heads, D head dim. Public functions take and
return (B, S, H, D) tensors; the log-sum-exp is float32 (B, H, Sq). Kernels see (B, H, S, D) views.

Kernel choice, per call (each returns the LSE):
  * CPU, fp32/fp64/bf16/fp16: `aten._scaled_dot_product_flash_attention_for_cpu`, forward and backward (it
    takes a mask).
  * CUDA forward, tried in the order of `CUDA_KERNELS`: cuDNN (`_scaled_dot_product_cudnn_attention`), then
    flash (`_scaled_dot_product_flash_attention`), both for fp16/bf16 without a mask; then the
    memory-efficient kernel, which also takes a mask and fp32. A kernel that refuses the inputs hands over to
    the next; one that runs out of memory raises.
  * CUDA backward, in the order of `CUDA_BACKWARD_KERNELS`: cuDNN, then flash (fp16/bf16 without a mask).
    Masked and fp32 blocks take the math backward: the memory-efficient kernel's backward is not used (see
    the comment above `CUDA_KERNELS`).
  * Any other device or dtype, or CUDA inputs that every kernel refused: the math path, which computes the LSE
    itself (and holds the whole score matrix of the block; a CUDA fallback to it is logged).

The backward of a block takes the *merged* output and LSE of the whole row of blocks (the standard
flash-attention trick): P = exp(S - lse_global) is then the block's slice of the global softmax, so the
block's dQ, dK, dV are its exact contributions to the global gradients.
"""

from __future__ import annotations

import logging
import math

import torch

from cp_hooks.attention.masks import kernel_mask, rows_with_keys

_aten = torch.ops.aten


def _bhsd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


def _mask_for_kernel(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    # (b, Sk) -> (b, 1, 1, Sk), (b, Sq, Sk) -> (b, 1, Sq, Sk); kernels want the query dtype.
    return None if bias is None else kernel_mask(bias).to(dtype)


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


def attention_with_lse(q, k, v, bias=None, *, scale=None, is_causal=False):
    """Exact softmax attention of `q` over (`k`, `v`) and the per-row log-sum-exp.

    Args:
        q: (B, Sq, H, D); k, v: (B, Sk, H, D).
        bias: optional additive float32 key bias (b, Sk) from `masks.key_bias_from_mask`, or boolean /
            additive row bias (b, Sq, Sk) from `masks.whole_mask_rows` (its columns of this block).
        scale: softmax scale, default 1/sqrt(D).
        is_causal: lower-triangular mask, top-left aligned (as SDPA).

    Returns:
        (out (B, Sq, H, D) in q's dtype, lse (B, H, Sq) float32). Rows whose keys are all masked get
        out = 0 and lse = -inf, so that merging them changes nothing.
    """
    scale = _scale(q, scale)
    if q.shape[1] == 0 or k.shape[1] == 0:
        # Empty shards (a sequence shorter than the ring): the CPU kernel divides by zero on them.
        lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"), device=q.device)
        return q.new_zeros(q.shape[:3] + v.shape[3:]), lse
    out = lse = None
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        out, lse = _aten._scaled_dot_product_flash_attention_for_cpu(
            _bhsd(q), _bhsd(k), _bhsd(v), 0.0, is_causal, attn_mask=_mask_for_kernel(bias, q.dtype), scale=scale
        )
    elif q.device.type == "cuda":
        out, lse = _cuda_forward(q, k, v, bias, scale, is_causal)
    if out is None:
        out, lse = _math_forward(q, k, v, bias, scale, is_causal)
        return out, lse
    out, lse = _bhsd(out), lse[..., : q.shape[1]].to(torch.promote_types(q.dtype, torch.float32))
    valid = rows_with_keys(bias)
    if valid is not None:
        # Kernels return lse = 0 (not -inf) for rows with no attendable key; make such rows neutral.
        # Branch-free on purpose: no host sync, and it traces.
        if valid.dim() == 1:  # a key bias: whole batch rows
            lse = torch.where(valid.view(-1, 1, 1), lse, float("-inf"))
            out = out * valid.view(-1, 1, 1, 1).to(out.dtype)
        else:  # a row bias: single query rows
            lse = torch.where(valid[:, None, :], lse, float("-inf"))
            out = out * valid[:, :, None, None].to(out.dtype)
    return out, lse


def attention_with_lse_backward(dout, q, k, v, out, lse, bias=None, *, scale=None, is_causal=False):
    """Gradients of this block's share of the global attention output.

    Args:
        dout: gradient of the global output (B, Sq, H, D).
        out, lse: the merged output and float32 log-sum-exp over all key blocks.
        Others as in `attention_with_lse`.

    Returns:
        (dq, dk, dv), float32 when the inputs are reduced precision on the math path, else the input dtype.
    """
    scale = _scale(q, scale)
    if q.shape[1] == 0 or k.shape[1] == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    # A row with no attendable key anywhere has lse = -inf; +inf makes its probabilities exp(s - inf) = 0.
    lse = torch.where(torch.isneginf(lse), float("inf"), lse)
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        grads = _aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _bhsd(dout.to(q.dtype)).contiguous(),
            _bhsd(q),
            _bhsd(k),
            _bhsd(v),
            _bhsd(out.to(q.dtype)).contiguous(),
            lse.contiguous(),
            0.0,
            is_causal,
            attn_mask=_mask_for_kernel(bias, q.dtype),
            scale=scale,
        )
        return tuple(_bhsd(g) for g in grads)
    if q.device.type == "cuda":
        grads = _cuda_backward(dout, q, k, v, out, lse, bias, scale, is_causal)
        if grads is not None:
            return grads
    return _math_backward(dout, q, k, v, out, lse, bias, scale, is_causal)


# ----------------------------------------------------------------------------------------------- math
def _scores(q, k, bias, scale, is_causal):
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    if bias is not None:
        s = s + kernel_mask(bias)
    if is_causal:
        sq, sk = s.shape[-2:]
        s = s.masked_fill(torch.ones(sq, sk, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return s


def _math_forward(q, k, v, bias, scale, is_causal):
    s = _scores(q, k, bias, scale, is_causal)
    lse = torch.logsumexp(s, dim=-1)  # (B, H, Sq)
    p = torch.exp(s - torch.where(torch.isneginf(lse), 0.0, lse)[..., None])
    out = torch.einsum("bhqk,bkhd->bqhd", p, v.float()).to(q.dtype)
    return out, lse


def _math_backward(dout, q, k, v, out, lse, bias, scale, is_causal):
    s = _scores(q, k, bias, scale, is_causal)
    p = torch.exp(s - lse[..., None])  # this block's slice of the global softmax
    do = dout.float()
    dv = torch.einsum("bhqk,bqhd->bkhd", p, do)
    dp = torch.einsum("bqhd,bkhd->bhqk", do, v.float())
    delta = (do * out.float()).sum(-1).transpose(1, 2)  # (B, H, Sq): rowsum(dO * O)
    ds = p * (dp - delta[..., None]) * scale
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, k.float())
    dk = torch.einsum("bhqk,bqhd->bkhd", ds, q.float())
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# ----------------------------------------------------------------------------------------------- cuda
# Kernels tried in this order on CUDA; each refuses inputs it cannot take (dtype, head dim, mask) with an
# error, and the next one is tried; the math path is the last resort. cuDNN and flash need fp16/bf16 and no
# mask; the memory-efficient kernel takes a mask and fp32. Its backward is not used: given the merged
# log-sum-exp of a ring it produced NaNs and illegal memory accesses on an H200 (torch 2.11), so masked and
# fp32 blocks take the math backward. Tests force single kernels by changing these tuples.
# The math path holds each block's whole (B, H, Sq, Sk) scores: a CUDA pass that falls back to it is logged
# (once per reason), and a kernel that runs out of memory raises instead of falling back, since the later
# kernels, and the math path above all, need as much memory or more.
CUDA_KERNELS = ("cudnn", "flash", "efficient")
CUDA_BACKWARD_KERNELS = ("cudnn", "flash")
_log = logging.getLogger(__name__)
_MATH_FALLBACKS_LOGGED: set[tuple] = set()  # (pass, (kernel, why) ...) already logged


def _out_of_memory(e: BaseException) -> bool:
    # Older builds and some kernels raise a plain RuntimeError("CUDA out of memory ...").
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _why(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _log_math_fallback(which: str, refused: list[tuple[str, str]]) -> None:
    """Log, once per set of reasons, that a CUDA attention pass runs on the math path."""
    key = (which, tuple(refused))
    if key in _MATH_FALLBACKS_LOGGED:
        return
    _MATH_FALLBACKS_LOGGED.add(key)
    reasons = "; ".join(f"{kernel}: {why}" for kernel, why in refused) or "no CUDA kernel enabled"
    _log.warning(
        "cp_hooks: CUDA attention %s falls back to the math path, which holds the whole (B, H, Sq, Sk) "
        "score matrix of each block (memory quadratic in the sequence) - %s",
        which,
        reasons,
    )


def _cuda_forward(q, k, v, bias, scale, is_causal):
    refused = []  # (kernel, why) for each kernel that did not run: logged if the math path has to
    for kernel in CUDA_KERNELS:
        if kernel in ("cudnn", "flash") and (bias is not None or q.dtype not in (torch.float16, torch.bfloat16)):
            refused.append((kernel, "takes no mask" if bias is not None else f"takes fp16/bf16, not {q.dtype}"))
            continue
        try:
            if kernel == "cudnn":
                res = _aten._scaled_dot_product_cudnn_attention(
                    _bhsd(q), _bhsd(k), _bhsd(v), None, True, 0.0, is_causal, False, scale=scale
                )
            elif kernel == "flash":
                res = _aten._scaled_dot_product_flash_attention(
                    _bhsd(q), _bhsd(k), _bhsd(v), 0.0, is_causal, scale=scale
                )
            else:
                res = _aten._scaled_dot_product_efficient_attention(
                    _bhsd(q), _bhsd(k), _bhsd(v), _efficient_bias(bias, q), True, 0.0, is_causal, scale=scale
                )
        except (RuntimeError, TypeError, IndexError) as e:
            if _out_of_memory(e):
                raise  # see above: falling back would need more memory, not less
            refused.append((kernel, _why(e)))
            continue
        # LSE layouts differ: (B, H, Sq), (B, H, Sq, 1) for cuDNN, (B, H, Sq padded to 32) for efficient.
        return res[0], res[1].reshape(q.shape[0], q.shape[2], -1)
    _log_math_fallback("forward", refused)
    return None, None


def _efficient_bias(bias, q):
    if bias is None:
        return None
    mask = kernel_mask(bias)
    b, _, rows, sk = mask.shape
    # The efficient kernel wants a bias whose last dim is 16-element aligned in memory: pad, then view.
    padded = torch.zeros(b, 1, rows, (sk + 15) // 16 * 16, dtype=q.dtype, device=q.device)
    padded[..., :sk] = mask
    return padded[..., :sk].expand(q.shape[0], q.shape[2], q.shape[1], sk)


def _cuda_backward(dout, q, k, v, out, lse, bias, scale, is_causal):
    if bias is not None or q.dtype not in (torch.float16, torch.bfloat16):
        # By design (see above), but the memory class changes all the same: say so once.
        why = "take no mask" if bias is not None else f"take fp16/bf16, not {q.dtype}"
        _log_math_fallback("backward", [("cudnn, flash", why), ("efficient", "its backward is not used")])
        return None
    sq, sk = q.shape[1], k.shape[1]
    dout, out = _bhsd(dout.to(q.dtype)).contiguous(), _bhsd(out.to(q.dtype)).contiguous()
    # Without dropout the kernels never read their random-number state; these only satisfy the schemas.
    seed = torch.zeros((), dtype=torch.int64, device=q.device)
    rng_state = torch.zeros(2, dtype=torch.uint64, device=q.device)
    refused = []  # (kernel, why) for each kernel that did not run: logged if the math path has to
    for kernel in CUDA_BACKWARD_KERNELS:
        try:
            if kernel == "cudnn":
                grads = _aten._scaled_dot_product_cudnn_attention_backward(
                    dout,
                    _bhsd(q),
                    _bhsd(k),
                    _bhsd(v),
                    out,
                    lse.unsqueeze(-1).contiguous(),
                    seed,
                    seed,
                    None,
                    None,
                    None,
                    sq,
                    sk,
                    0.0,
                    is_causal,
                    scale=scale,
                )
            else:
                grads = _aten._scaled_dot_product_flash_attention_backward(
                    dout,
                    _bhsd(q),
                    _bhsd(k),
                    _bhsd(v),
                    out,
                    lse.contiguous(),
                    None,
                    None,
                    sq,
                    sk,
                    0.0,
                    is_causal,
                    rng_state,
                    seed.to(torch.uint64),
                    scale=scale,
                )
        except (RuntimeError, TypeError, IndexError) as e:
            if _out_of_memory(e):
                raise  # the math backward needs more memory, not less
            refused.append((kernel, _why(e)))
            continue
        return tuple(_bhsd(g) for g in grads)
    _log_math_fallback("backward", refused)
    return None

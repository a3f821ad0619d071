"""The compile boundary: context-parallel attention as registered operators with an autograd formula.

`torch.compile` sees each context-parallel attention call as one opaque operator (`torch.library.custom_op`)
with a fake implementation that gives the output's shape. Inside, the eager implementation may use any
transport — gloo or nccl collectives, batched send/recv for the ring, the CPU shared-memory all-to-all —
none of which dynamo has to trace, so an enabled model compiles with `fullgraph=True` (docs/architecture.md,
"Compile boundary"). Every size an operator needs is an argument (per-rank lengths come from the plan's
splits, `cp_hooks.lengths`), so nothing in the traced path synchronises with the host.

Operators (legend: B batch, S local sequence, H heads, D head dim; "_h" = the Ulysses head layout, whole
sequence of the Ulysses group for H/u heads):
  * `cp_hooks::attention`: inference; out (B, S, H, D) only, so the gathered tensors are freed inside.
  * `cp_hooks::ring_forward` / `ring_backward`: training with pure ring attention; the forward returns
    (out, lse), the backward gets the local q, k, v, out and lse.
  * `cp_hooks::ulysses_forward` / `ulysses_backward`: training with Ulysses or hybrid; the forward also
    returns q, k, v, the key bias, out and lse in the head layout, which the backward needs (the same
    tensors autograd would have saved) — one all-to-all of dout in, three of dq, dk, dv out.
The settings of a call (groups, degrees, rotate method) live in the bound runtime, found by `key`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward
from cp_hooks.attention.ring import ring_backward, ring_forward
from cp_hooks.attention.ulysses import heads_to_seq, pad_heads, seq_to_heads
from cp_hooks.comm import precision

if TYPE_CHECKING:  # the runtime imports this module when it binds
    from cp_hooks.runtime import ContextParallelRuntime

_RUNTIMES: dict[int, ContextParallelRuntime] = {}  # key -> ContextParallelRuntime (kept alive while registered)


def register_runtime(runtime) -> int:
    """The integer that names `runtime` in operator calls (an operator takes no Python objects).

    Called when `config.setup()` binds a runtime, outside any compiled region; traced code reads
    `runtime.op_key`.
    """
    key = len(_RUNTIMES)
    _RUNTIMES[key] = runtime
    return key


def _empty() -> Tensor:
    return torch.empty(0)


def _unaliased(outputs, inputs) -> tuple:
    """The outputs, contiguous, copied only where one shares memory with an input or an earlier output.

    An operator's outputs may alias neither its inputs nor each other (e.g. the ring's dK and dV are two
    halves of one buffer); views of its own temporaries are fine and stay uncopied.
    """
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, Tensor) and t.numel()}
    result = []
    for t in outputs:
        t = t.contiguous()
        if t.numel() == 0 or t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        result.append(t)
    return tuple(result)


# ----------------------------------------------------------------------------------------------- eager
def _ring_kv_sizes(runtime, kv_sizes: list[int]) -> list[int]:
    """The ring group's key lengths: with Ulysses inside, a ring rank holds its Ulysses group's whole sequence."""
    u = runtime.ulysses_degree
    return [sum(kv_sizes[i * u : (i + 1) * u]) for i in range(runtime.ring_degree)]


def _ulysses_sizes(runtime, sizes: list[int]) -> list[int]:
    """This rank's Ulysses group's lengths, from every rank's lengths in the flattened mesh."""
    u, start = runtime.ulysses_degree, runtime.ring_rank * runtime.ulysses_degree
    return sizes[start : start + u]


def _inner_forward(runtime, q, k, v, bias, kv_sizes, scale, is_causal):
    """Attention of the (head-layout) q over every rank's keys: local, or a ring across the ring group."""
    if runtime.ring_degree == 1:
        return attention_with_lse(q, k, v, bias, scale=scale, is_causal=is_causal)
    return ring_forward(
        q,
        k,
        v,
        bias,
        group=runtime.ring_group,
        kv_sizes=_ring_kv_sizes(runtime, kv_sizes),
        rotate_method=runtime.rotate_method,
        scale=scale,
        is_causal=is_causal,
        convert_to_fp32=runtime.convert_to_fp32,
        travel=_ring_travel(runtime, k.dtype),
    )


def _ring_travel(runtime, dtype):
    """What the ring's K and V blocks travel in: (keys, values) (`cp_hooks.comm.precision.travel_dtype`)."""
    return _travel(runtime, dtype, key=True), _travel(runtime, dtype)


def _inner_backward(runtime, dout, q, k, v, bias, out, lse, kv_sizes, scale, is_causal):
    if runtime.ring_degree == 1:
        return attention_with_lse_backward(dout, q, k, v, out, lse, bias, scale=scale, is_causal=is_causal)
    return ring_backward(
        dout,
        q,
        k,
        v,
        bias,
        out,
        lse,
        group=runtime.ring_group,
        kv_sizes=_ring_kv_sizes(runtime, kv_sizes),
        rotate_method=runtime.rotate_method,
        scale=scale,
        is_causal=is_causal,
        convert_to_fp32=runtime.convert_to_fp32,
        travel=_ring_travel(runtime, k.dtype),
    )


def _travel(runtime, dtype, key: bool = False):
    """The dtype a forward tensor of attention travels in under the runtime's `comm_dtype` (None: as it is)."""
    return precision.travel_dtype(runtime.comm_dtype, dtype, key=key, fp8_keys=runtime.comm_fp8_keys)


def _to_heads(runtime, q, k, v, bias, q_sizes, kv_sizes, reuse_buffer: bool):
    from cp_hooks import comm

    group = runtime.ulysses_group
    uq, ukv = _ulysses_sizes(runtime, q_sizes), _ulysses_sizes(runtime, kv_sizes)
    q, k, v = (pad_heads(t, runtime.ulysses_degree) for t in (q, k, v))
    # Payload precision (comm_dtype): each tensor is rounded as a whole before its all-to-all, the rows this
    # rank keeps included, and restored to its dtype on arrival; the all-to-all moves the wire form (cast, or
    # fp8 bytes with each row's scale) unchanged. Keys may travel in a wider dtype than q and v.
    dtype = q.dtype
    travels = (_travel(runtime, dtype), _travel(runtime, dtype, key=True), _travel(runtime, dtype))
    q, k, v = (precision.pack(t, travel) for t, travel in zip((q, k, v), travels))
    # One send buffer for q, k and v at inference: three would each wait for gloo's worker thread to drop
    # its last reference, which can come after the next allocation (a shard more at the peak each).
    q, send = seq_to_heads(q, group, uq)
    k, send = seq_to_heads(k, group, ukv, send if reuse_buffer else None)
    v, send = seq_to_heads(v, group, ukv, send if reuse_buffer else None)
    del send
    q, k, v = (precision.unpack(t, travel, dtype) for t, travel in zip((q, k, v), travels))
    if bias is not None and bias.dim() == 2:  # a key bias follows its keys; a row bias already has every key
        bias = comm.all_gather(bias, ukv, group, dim=1, payload="mask")
    return q, k, v, bias


def _from_heads(runtime, x, q_sizes, heads, rounded: bool = True):
    """The head layout back to the sequence split. `rounded`: the attention output, which travels in the
    runtime's `comm_dtype`; gradients (`rounded=False`) travel in their own dtype."""
    travel = _travel(runtime, x.dtype) if rounded else None
    out = heads_to_seq(precision.pack(x, travel), runtime.ulysses_group, _ulysses_sizes(runtime, q_sizes))
    out = precision.unpack(out, travel, x.dtype)
    return out if out.shape[2] == heads else out[:, :, :heads]  # padded heads (ulysses_anything) go


def _attention_eager(q, k, v, bias, runtime, q_sizes, kv_sizes, scale, is_causal) -> Tensor:
    if runtime.ulysses_degree == 1:
        out, _ = _inner_forward(runtime, q, k, v, bias, kv_sizes, scale, is_causal)
        return out
    heads = q.shape[2]
    q, k, v, bias = _to_heads(runtime, q, k, v, bias, q_sizes, kv_sizes, reuse_buffer=True)
    out, _ = _inner_forward(runtime, q, k, v, bias, kv_sizes, scale, is_causal)
    # The gathered q, k, v are done with: let them go before the output's all-to-all buffers are allocated.
    del q, k, v, bias
    return _from_heads(runtime, out, q_sizes, heads)


# ----------------------------------------------------------------------------------------------- operators
@torch.library.custom_op("cp_hooks::attention", mutates_args=())
def attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Optional[Tensor],
    key: int,
    q_sizes: list[int],
    kv_sizes: list[int],
    scale: float,
    is_causal: bool,
) -> Tensor:
    """Context-parallel attention of the local q, k, v (B, S, H, D) without autograd state."""
    out = _attention_eager(q, k, v, bias, _RUNTIMES[key], q_sizes, kv_sizes, scale, is_causal)
    return _unaliased([out], [q, k, v, bias])[0]


@attention_op.register_fake
def _(q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("cp_hooks::ring_forward", mutates_args=())
def ring_forward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Optional[Tensor],
    key: int,
    kv_sizes: list[int],
    scale: float,
    is_causal: bool,
) -> tuple[Tensor, Tensor]:
    """Ring attention for training: (out (B, S, H, D), lse (B, H, S) float32)."""
    out, lse = _inner_forward(_RUNTIMES[key], q, k, v, bias, kv_sizes, scale, is_causal)
    return _unaliased([out, lse], [q, k, v, bias])


@ring_forward_op.register_fake
def _(q, k, v, bias, key, kv_sizes, scale, is_causal):
    lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


@torch.library.custom_op("cp_hooks::ring_backward", mutates_args=())
def ring_backward_op(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Optional[Tensor],
    out: Tensor,
    lse: Tensor,
    key: int,
    kv_sizes: list[int],
    scale: float,
    is_causal: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the local q, k, v under ring attention (the dK/dV of every block go home to their rank)."""
    grads = _inner_backward(_RUNTIMES[key], dout, q, k, v, bias, out, lse, kv_sizes, scale, is_causal)
    return _unaliased(grads, [dout, q, k, v, bias, out, lse])


@ring_backward_op.register_fake
def _(dout, q, k, v, bias, out, lse, key, kv_sizes, scale, is_causal):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


@torch.library.custom_op("cp_hooks::ulysses_forward", mutates_args=())
def ulysses_forward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Optional[Tensor],
    key: int,
    q_sizes: list[int],
    kv_sizes: list[int],
    scale: float,
    is_causal: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Ulysses (or hybrid) attention for training: out, and q, k, v, bias, out, lse in the head layout."""
    runtime = _RUNTIMES[key]
    heads = q.shape[2]
    q_h, k_h, v_h, bias_h = _to_heads(runtime, q, k, v, bias, q_sizes, kv_sizes, reuse_buffer=False)
    out_h, lse_h = _inner_forward(runtime, q_h, k_h, v_h, bias_h, kv_sizes, scale, is_causal)
    out = _from_heads(runtime, out_h, q_sizes, heads)
    bias_h = _empty() if bias_h is None else bias_h
    return _unaliased([out, q_h, k_h, v_h, bias_h, out_h, lse_h], [q, k, v, bias])


def _head_layout_shape(q, sizes, world):
    b, _, h, d = q.shape
    return (b, sum(sizes), (h + world - 1) // world, d)


@ulysses_forward_op.register_fake
def _(q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal):
    runtime = _RUNTIMES[key]
    u = runtime.ulysses_degree
    q_shape = _head_layout_shape(q, _ulysses_sizes(runtime, q_sizes), u)
    kv_shape = _head_layout_shape(k, _ulysses_sizes(runtime, kv_sizes), u)
    bias_h = (
        _empty()
        if bias is None
        else bias.new_empty((bias.shape[0], kv_shape[1]))
        if bias.dim() == 2
        else bias.new_empty(bias.shape)
    )
    return (
        torch.empty_like(q, memory_format=torch.contiguous_format),
        q.new_empty(q_shape),
        k.new_empty(kv_shape),
        v.new_empty(kv_shape),
        bias_h,
        q.new_empty(q_shape),
        q.new_empty((q_shape[0], q_shape[2], q_shape[1]), dtype=torch.float32),
    )


@torch.library.custom_op("cp_hooks::ulysses_backward", mutates_args=())
def ulysses_backward_op(
    dout: Tensor,
    q_h: Tensor,
    k_h: Tensor,
    v_h: Tensor,
    bias_h: Tensor,
    out_h: Tensor,
    lse_h: Tensor,
    key: int,
    q_sizes: list[int],
    kv_sizes: list[int],
    heads: int,
    scale: float,
    is_causal: bool,
    has_bias: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the local q, k, v (B, S, H, D) under Ulysses or hybrid attention."""
    runtime = _RUNTIMES[key]
    group = runtime.ulysses_group
    dout_h, _ = seq_to_heads(pad_heads(dout, runtime.ulysses_degree), group, _ulysses_sizes(runtime, q_sizes))
    # `has_bias`, not the bias' size: a gathered bias may have no keys on some ranks (empty shards), and ring
    # peers must agree on whether a bias travels with the blocks.
    bias = bias_h if has_bias else None
    dq, dk, dv = _inner_backward(runtime, dout_h, q_h, k_h, v_h, bias, out_h, lse_h, kv_sizes, scale, is_causal)
    del dout_h
    # Gradients travel in the model's precision (docs/comm_precision.md, "Training"): rounded=False.
    grads = (
        _from_heads(runtime, dq.to(q_h.dtype), q_sizes, heads, rounded=False),
        _from_heads(runtime, dk.to(k_h.dtype), kv_sizes, heads, rounded=False),
        _from_heads(runtime, dv.to(v_h.dtype), kv_sizes, heads, rounded=False),
    )
    return _unaliased(grads, [dout, q_h, k_h, v_h, bias, out_h, lse_h])


@ulysses_backward_op.register_fake
def _(dout, q_h, k_h, v_h, bias_h, out_h, lse_h, key, q_sizes, kv_sizes, heads, scale, is_causal, has_bias):
    runtime = _RUNTIMES[key]
    b, _, _, d = dout.shape
    own = runtime.rank
    return (
        dout.new_empty((b, q_sizes[own], heads, d)),
        dout.new_empty((b, kv_sizes[own], heads, d)),
        dout.new_empty((b, kv_sizes[own], heads, d)),
    )


# ----------------------------------------------------------------------------------------------- autograd
class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, key, kv_sizes, scale, is_causal):
        out, lse = torch.ops.cp_hooks.ring_forward(q, k, v, bias, key, kv_sizes, scale, is_causal)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.settings = (key, kv_sizes, scale, is_causal)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.cp_hooks.ring_backward(dout.contiguous(), q, k, v, bias, out, lse, *ctx.settings)
        return dq, dk, dv, None, None, None, None, None


class _UlyssesAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal):
        out, *saved = torch.ops.cp_hooks.ulysses_forward(q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal)
        ctx.save_for_backward(*saved)
        ctx.settings = (key, q_sizes, kv_sizes, q.shape[2], scale, is_causal, bias is not None)
        return out

    @staticmethod
    def backward(ctx, dout):
        dq, dk, dv = torch.ops.cp_hooks.ulysses_backward(dout.contiguous(), *ctx.saved_tensors, *ctx.settings)
        return dq, dk, dv, None, None, None, None, None, None


def attention(q, k, v, bias, runtime, q_sizes: list[int], kv_sizes: list[int], scale: float, is_causal: bool) -> Tensor:
    """Context-parallel attention through the operators: differentiable when autograd needs it.

    Args:
        q, k, v: (B, S, H, D) local shards; bias: float32 (b, S_kv) key bias, boolean or float32
            (b, Sq, S_kv_whole) row bias (the rows of the queries this rank's kernel computes: its ring
            rank's, see `api`), or None.
        runtime: the bound `ContextParallelRuntime`.
        q_sizes, kv_sizes: every rank's query / key length in the flattened ("ring", "ulysses") mesh.
    """
    key = runtime.op_key
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        if not torch.compiler.is_compiling():
            # Eager inference runs the operator's body directly: the dispatcher's Python path for a custom
            # operator costs tens of microseconds per call and gives eager code nothing. Contiguous, as the
            # operator's result (a model may `view` it).
            return _attention_eager(q, k, v, bias, runtime, q_sizes, kv_sizes, scale, is_causal).contiguous()
        return torch.ops.cp_hooks.attention(q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal)
    if runtime.ulysses_degree == 1:
        return _RingAttention.apply(q, k, v, bias, key, kv_sizes, scale, is_causal)
    return _UlyssesAttention.apply(q, k, v, bias, key, q_sizes, kv_sizes, scale, is_causal)

"""context_parallel_attention against single-process SDPA: every mode, forward and backward, CPU/gloo."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cp_hooks import context_parallel_attention
from cp_testing import BF16_TOL, FP32_TOL, make_config, rel_err, shard


def _inputs(b, s, h, d, dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(b, s, h, d, generator=g) for _ in range(4))
    mask = None
    if mask_kind == "padding":
        keep = torch.ones(b, s, dtype=torch.bool)
        keep[0, s - max(1, s // 3):] = False  # padding at the end: whole remote blocks are masked
        if b > 1:
            keep[1, : s // 4] = False
        mask = keep
    elif mask_kind == "additive":
        mask = torch.randn(b, 1, 1, s, generator=g).mul(2).view(b, 1, 1, s)
    return [t.to(dtype) for t in (q, k, v, grad)], mask


def _reference(q, k, v, mask, is_causal, grad):
    q, k, v = (t.double().detach().requires_grad_() for t in (q, k, v))
    m = None
    if mask is not None:
        m = mask[:, None, None, :] if mask.dtype == torch.bool else mask.double()
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m,
                                         is_causal=is_causal).transpose(1, 2)
    out.backward(grad.double())
    return out.detach(), q.grad, k.grad, v.grad


def attention_parity(ring, ulysses, rotate, shape, dtype_name, mask_kind, is_causal=False, anything=False, seed=0):
    dtype = getattr(torch, dtype_name)
    flags = {}
    if anything:
        flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    config = make_config(ring, ulysses, rotate_method=rotate, **flags)
    (q, k, v, grad), mask = _inputs(*shape, dtype, mask_kind, seed)
    ref_out, ref_dq, ref_dk, ref_dv = _reference(q, k, v, mask, is_causal, grad)

    lq, lk, lv = (shard(t).requires_grad_() for t in (q, k, v))
    local_mask = None if mask is None else (shard(mask, 1) if mask.dim() == 2 else shard(mask, 3))
    out = context_parallel_attention(lq, lk, lv, local_mask, is_causal=is_causal, config=config)
    out.backward(shard(grad))
    errors = {
        "out": rel_err(out, shard(ref_out)),
        "dq": rel_err(lq.grad, shard(ref_dq)),
        "dk": rel_err(lk.grad, shard(ref_dk)),
        "dv": rel_err(lv.grad, shard(ref_dv)),
    }
    tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, f"rank {dist.get_rank()}: errors above {tol}: {bad}"
    return errors


MODES_2 = [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")]
MODES_4 = [(1, 4, "allgather"), (4, 1, "allgather"), (4, 1, "alltoall"), (2, 2, "allgather"), (2, 2, "alltoall")]


@pytest.mark.parametrize("mask_kind", [None, "padding", "additive"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("ring,ulysses,rotate", MODES_2)
def test_two_ranks(pool, ring, ulysses, rotate, dtype, mask_kind):
    pool(2).run(attention_parity, ring, ulysses, rotate, (2, 64, 4, 16), dtype, mask_kind)


@pytest.mark.parametrize("mask_kind", [None, "padding"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("ring,ulysses,rotate", MODES_4)
def test_four_ranks(pool, ring, ulysses, rotate, dtype, mask_kind):
    pool(4).run(attention_parity, ring, ulysses, rotate, (2, 64, 4, 16), dtype, mask_kind)


@pytest.mark.parametrize("ring,ulysses,rotate", MODES_4)
def test_causal(pool, ring, ulysses, rotate):
    pool(4).run(attention_parity, ring, ulysses, rotate, (1, 32, 4, 8), "float32", None, True)


# ----------------------------------------------------------------------------- anything modes (uneven)
def _modes(world):
    modes = [(1, world, "allgather"), (world, 1, "allgather"), (world, 1, "alltoall")]
    if world == 4:
        modes += [(2, 2, "allgather"), (2, 2, "alltoall")]
    return modes


def uneven_sweep(world, lengths, heads_list, dtype="float32", mask_kinds=(None, "padding")):
    """Many uneven cases in one task: every mode x length x heads x mask, forward and backward."""
    worst = 0.0
    for ring, ulysses, rotate in _modes(world):
        for length in lengths:
            for heads in heads_list:
                for mask_kind in mask_kinds:
                    try:
                        errors = attention_parity(ring, ulysses, rotate, (2, length, heads, 8), dtype, mask_kind,
                                                  anything=True, seed=length)
                    except AssertionError as e:
                        raise AssertionError(f"ring={ring} ulysses={ulysses} {rotate} len={length} heads={heads} "
                                             f"mask={mask_kind}: {e}") from None
                    worst = max(worst, *errors.values())
    return worst


@pytest.mark.parametrize("world", [2, 3, 4])
def test_uneven_lengths_and_heads(pool, world):
    lengths = sorted({world - 1, world + 1, 2 * world + 1, 13, 31})
    pool(world).run(uneven_sweep, world, [n for n in lengths if n >= 1], [3, 5, 2 * world])


def test_wan_i2v_text_length_769(pool):
    pool(3).run(uneven_sweep, 3, [769], [30], "float32", (None,))


def test_uneven_bf16(pool):
    pool(4).run(uneven_sweep, 4, [13], [5], "bfloat16", ("padding",))


def test_sequence_shorter_than_ranks(pool):
    # One token over two ranks: rank 1 holds an empty shard and must still take part in every collective.
    pool(2).run(uneven_sweep, 2, [1], [2, 3], "float32", (None,))


def heads_repeated_mask():
    """A key-padding mask repeated over heads (B, H, 1, S), as LTX's processor passes it, is accepted."""
    config = make_config(2, 1)
    (q, k, v, _), keep = _inputs(2, 16, 4, 8, torch.float32, "padding")
    repeated = keep[:, None, None, :].expand(2, 4, 1, 16)
    out = context_parallel_attention(shard(q), shard(k), shard(v), shard(repeated, 3), config=config)
    expected = context_parallel_attention(shard(q), shard(k), shard(v), shard(keep, 1), config=config)
    assert torch.equal(out, expected)
    per_head = repeated.clone()
    per_head[:, 1] = True
    with pytest.raises(ValueError, match="varies along queries or heads"):
        context_parallel_attention(shard(q), shard(k), shard(v), shard(per_head, 3), config=config)
    return True


def test_mask_repeated_over_heads(pool):
    pool(2).run(heads_repeated_mask)


def masks_read_by_value_compiled(ring, ulysses):
    """Under torch.compile(fullgraph=True) the masks cp_hooks reads by value (repeated over heads; v[q] & v[k])
    trace without a branch on tensor values: their form is checked when the graph runs (torch._assert_async),
    so the results equal eager ones and a mask of another form still raises."""
    torch._dynamo.reset()
    config = make_config(ring, ulysses)
    attend = torch.compile(lambda q, k, v, m: context_parallel_attention(q, k, v, m, config=config),
                           fullgraph=True, backend="aot_eager", dynamic=False)
    (q, k, v, _), keep = _inputs(2, 16, 4, 8, torch.float32, "padding")
    lq, lk, lv = shard(q), shard(k), shard(v)
    repeated = shard(keep[:, None, None, :].expand(2, 4, 1, 16), 3)
    expected = context_parallel_attention(lq, lk, lv, shard(keep, 1), config=config)
    assert rel_err(attend(lq, lk, lv, repeated), expected) <= FP32_TOL
    per_head = repeated.clone()
    per_head[:, 1] = True
    with pytest.raises(RuntimeError, match="repeated over heads"):
        attend(lq, lk, lv, per_head)
    valid = shard(torch.arange(16)[None, :].expand(2, 16) % 5 != 0, 1)
    symmetric = valid[:, None, :, None] & valid[:, None, None, :]
    eager = context_parallel_attention(lq, lk, lv, symmetric, config=config)
    assert rel_err(attend(lq, lk, lv, symmetric), eager) <= FP32_TOL
    other = symmetric.clone()
    other[:, :, 0, 1] = ~other[:, :, 0, 1]  # no longer v[q] & v[k]
    with pytest.raises(RuntimeError, match=r"v\[q\] & v\[k\]"):
        attend(lq, lk, lv, other)
    return True


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_masks_read_by_value_under_compile(pool, ring, ulysses):
    pool(2).run(masks_read_by_value_compiled, ring, ulysses, timeout=300)


def symmetric_padding_mask(ring, ulysses, rotate):
    """A `v[q] & v[k]` self-attention mask (HunyuanVideo 1.5's processor) is split into keys and queries.

    Each rank builds it from its own tokens, as the processor does; whole shards of invalid tokens included.
    """
    config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    b, s, h, d = 2, 22, 4, 8
    (q, k, v, grad), _ = _inputs(b, s, h, d, torch.float32, None)
    valid = torch.ones(b, s, dtype=torch.bool)
    valid[0, 11:] = False  # the last ranks of sample 0 hold no valid token at all
    valid[1, 3:6] = False
    full_mask = valid[:, None, :, None] & valid[:, None, None, :]
    lq, lk, lv = (shard(t).requires_grad_() for t in (q, k, v))
    rq, rk, rv = (t.clone().requires_grad_() for t in (q, k, v))
    # Reference in fp32 on CPU: SDPA's flash kernel gives zero rows for queries that see no key.
    reference = F.scaled_dot_product_attention(rq.transpose(1, 2), rk.transpose(1, 2), rv.transpose(1, 2),
                                               attn_mask=full_mask).transpose(1, 2)
    reference.backward(grad)
    local_valid = shard(valid, 1)
    local_mask = local_valid[:, None, :, None] & local_valid[:, None, None, :]
    out = context_parallel_attention(lq, lk, lv, local_mask, config=config)
    out.backward(shard(grad))
    for actual, expected in ((out, reference), (lq.grad, rq.grad), (lk.grad, rk.grad), (lv.grad, rv.grad)):
        assert rel_err(actual, shard(expected)) <= FP32_TOL
    return True


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 4, "allgather"), (4, 1, "alltoall"), (2, 2, "alltoall")])
def test_symmetric_padding_mask(pool, ring, ulysses, rotate):
    pool(4).run(symmetric_padding_mask, ring, ulysses, rotate)


def ulysses_dropout(dropout_p: float) -> float:
    """Pure Ulysses with attention dropout: exact when nothing is dropped, and differentiable.

    With p = 1e-9 SDPA takes its dropout path but drops nothing (in expectation 1e-9 of the weights, none at
    these sizes), so the result must equal the no-dropout reference; with p = 0.5 the output must differ.
    """
    config = make_config(1, 2)
    (q, k, v, grad), _ = _inputs(2, 32, 4, 8, torch.float32, None)
    ref_out, ref_dq, _, _ = _reference(q, k, v, None, False, grad)
    lq, lk, lv = (shard(t).requires_grad_() for t in (q, k, v))
    torch.manual_seed(0)
    out = context_parallel_attention(lq, lk, lv, dropout_p=dropout_p, config=config)
    out.backward(shard(grad))
    return max(rel_err(out, shard(ref_out)), rel_err(lq.grad, shard(ref_dq)))


def test_ulysses_with_dropout(pool):
    assert max(pool(2).run(ulysses_dropout, 1e-9)) <= FP32_TOL
    assert min(pool(2).run(ulysses_dropout, 0.5)) > 1e-2


class _MaskedAttention(torch.nn.Module):
    """SDPA with whatever 4-D mask the caller passes (a processor that builds its mask per rank)."""

    def forward(self, x, mask):
        q = x.view(x.shape[0], x.shape[1], 2, -1).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q, attn_mask=mask).transpose(1, 2).flatten(2)


def mask_check_fails_on_one_rank():
    from cp_hooks import ContextParallelInput, disable_parallelism, enable_parallelism

    model = _MaskedAttention()
    enable_parallelism(model, make_config(1, dist.get_world_size()), strict=False,
                       plan={"": {"x": ContextParallelInput(split_dim=1, expected_dims=3)}})
    x = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    local = 8 // dist.get_world_size()
    valid = torch.ones(1, local, dtype=torch.bool)
    good = (valid[:, :, None] & valid[:, None, :])[:, None]  # v[q] & v[k]: read as a key-padding mask
    bad = torch.ones(1, 1, local, local, dtype=torch.bool).tril()  # causal over the shard: not that form
    messages = []
    for mask in (bad if dist.get_rank() == 1 else good, good):  # the second forward is good on every rank
        try:
            with torch.no_grad():
                model(x, mask)
            messages.append("ok")
        except ValueError as error:
            messages.append(str(error))
    disable_parallelism(model)
    return messages


def test_mask_check_failing_on_one_rank_raises_on_every_rank(pool):
    # Before: rank 1 refused at once while rank 0 waited in the all-to-all (a hang until the group's timeout).
    for first, second in pool(2).run(mask_check_fails_on_one_rank, timeout=60):
        assert "must be v[q] & v[k]" in first and "found on rank(s) [1]" in first, first
        assert second == "ok"

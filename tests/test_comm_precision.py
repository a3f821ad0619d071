"""Lower-precision communication (`ContextParallelConfig(comm_dtype=...)`) equals one process rounded alike.

The one-process reference (`rounded_reference`, `RoundedSDPA`) wraps one-process attention so that the same
tensors are rounded the same way at the same points (`cp_hooks.comm.precision.round_trip`, per (token, head)
row, so the layout a rank holds a row in does not matter):
  * Ulysses (ulysses_degree > 1): q, k and v before attention, the output after it;
  * the ring (ring_degree > 1): K and V before attention (after Ulysses' rounding in hybrid: the ring rounds
    the blocks it sends again, as the context-parallel code does).
The gradient of a rounding is the identity (straight-through), and gradients travel unrounded.

Tolerances (docs/comm_precision.md):
  * where no rounded tensor is itself computed (one ring attention call: its inputs are rounded, its output
    is not), fp32: max |cp - ref| / max(1, max |ref|) <= 1e-5, as any fp32 context-parallel result;
  * where a rounded tensor is computed (the Ulysses output, any layer after the first), a 1e-7 difference
    in summation order can move a value across a rounding boundary, so the bound is statistical: the relative
    L2 distance to the rounded reference is <= 5 % of that reference's own distance to full-precision
    communication (`stat_bound`). For fp8 that is the bound; a 16-bit format's finer spacing makes boundary
    crossings more frequent, by a ratio that follows from the dtypes (`flip_ratio`: bf16 ~0.05, fp16 ~0.15;
    measured up to 0.08 and 0.09 in the tiny Wan and Flux at four ranks), and the bound is twice that there. A scheme
    with other scales, or one that skips a rank's own part, is far outside it
    (`test_the_bound_tells_schemes_apart`).
  * gradients of one attention call: exact to fp32 (1e-5) in every mode: what is rounded are inputs of the
    backward that equal the reference's bit for bit (the rounded q, k, v), and gradients are not rounded;
    parameter gradients through a model: statistical (the forward's roundings of computed tensors feed them).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cp_hooks import comm_stats, context_parallel_attention, disable_parallelism, enable_parallelism
from cp_hooks.comm import precision
from cp_testing import FP32_TOL, make_config, rel_err, shard

KEEP_GOING = False  # debugging: collect every record instead of stopping at the first failure
STAT_FRACTION = 0.05  # the statistical bound: 5 % of the rounded reference's distance to full precision
FP8 = torch.float8_e4m3fn
# (comm_dtype, comm_fp8_keys) of the issue: bf16, fp16, fp8 with bf16 keys, fp8 keys (both fp8 formats).
SCHEMES = [(torch.bfloat16, False), (torch.float16, False), (FP8, False), (FP8, True), (torch.float8_e5m2, True)]
MODES = {
    2: [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")],
    4: [(1, 4, "allgather"), (4, 1, "alltoall"), (2, 2, "allgather"), (2, 2, "alltoall")],
}


# ------------------------------------------------------------------------------------------- the reference
def _travels(comm_dtype, fp8_keys, dtype):
    """(q, k, v / output) travel dtypes, as cp_hooks.attention.ops chooses them."""
    return (precision.travel_dtype(comm_dtype, dtype), precision.travel_dtype(comm_dtype, dtype, key=True,
                                                                               fp8_keys=fp8_keys),
            precision.travel_dtype(comm_dtype, dtype))


def _round(x, travel):
    """Rounded in the forward, the identity in the backward (straight-through)."""
    return x + (precision.round_trip(x.detach(), travel) - x.detach())


def round_inputs(q, k, v, ring, ulysses, comm_dtype, fp8_keys):
    """q, k, v as the context-parallel attention kernel sees them (rounded at Ulysses' and the ring's points)."""
    if comm_dtype is None:
        return q, k, v
    tq, tk, tv = _travels(comm_dtype, fp8_keys, q.dtype)
    if ulysses > 1:
        q, k, v = _round(q, tq), _round(k, tk), _round(v, tv)
    if ring > 1:
        k, v = _round(k, tk), _round(v, tv)
    return q, k, v


def round_output(out, ulysses, comm_dtype):
    """The output as it arrives back (rounded by Ulysses' all-to-all only: the ring's output stays local)."""
    if comm_dtype is None or ulysses == 1:
        return out
    return _round(out, precision.travel_dtype(comm_dtype, out.dtype))


def rounded_reference(q, k, v, mask, ring, ulysses, comm_dtype, fp8_keys):
    """One-process attention (B, S, H, D) with the context-parallel run's rounding; computed in fp64, returned
    in the inputs' dtype, differentiable (straight-through)."""
    dtype = q.dtype
    q, k, v = round_inputs(q, k, v, ring, ulysses, comm_dtype, fp8_keys)
    m = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (q, k, v)), attn_mask=m)
    return round_output(out.transpose(1, 2).to(dtype), ulysses, comm_dtype)


class RoundedSDPA(contextlib.ContextDecorator):
    """Inside the block, torch's SDPA — the one-process model's attention — rounds as context parallelism
    does: its self-attention calls (query and key lengths equal; cross-attention to replicated text is not
    communicated, so not rounded)."""

    def __init__(self, ring, ulysses, comm_dtype, fp8_keys):
        self.args = (ring, ulysses, comm_dtype, fp8_keys)

    def __enter__(self):
        self._original = F.scaled_dot_product_attention
        ring, ulysses, comm_dtype, fp8_keys = self.args
        original = self._original

        def sdpa(query, key, value, *args, **kwargs):  # (B, H, S, D): rows are still the last dim
            if query.shape[-2] != key.shape[-2]:
                return original(query, key, value, *args, **kwargs)
            query, key, value = round_inputs(query, key, value, ring, ulysses, comm_dtype, fp8_keys)
            return round_output(original(query, key, value, *args, **kwargs), ulysses, comm_dtype)

        torch.nn.functional.scaled_dot_product_attention = sdpa
        return self

    def __exit__(self, *exc):
        torch.nn.functional.scaled_dot_product_attention = self._original
        return False


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def flip_ratio(comm_dtype, terms: int = 256) -> float:
    """The ratio that rounding-boundary crossings alone give, from the dtypes: a value computed with relative
    error delta crosses a boundary of a format with relative spacing s with probability p = 2 delta / s and
    then errs by s, where rounding errs by s / sqrt(12) on average: ratio sqrt(12 p) = sqrt(24 delta / s).
    delta: an fp32 sum of `terms` products (the projection over the hidden size 4 x 64 that makes q, k, v;
    attention's sums over head_dim and keys are shorter or averaging), sqrt(terms) * eps(fp32) / 2."""
    spacing = torch.finfo(comm_dtype if comm_dtype is not None else torch.float32).eps  # 2^-mantissa bits
    delta = terms ** 0.5 * torch.finfo(torch.float32).eps / 2
    return (24 * delta / spacing) ** 0.5


def stat_bound(comm_dtype) -> float:
    """The statistical bound: 5 % (the issue's), or twice the boundary-crossing ratio where a 16-bit format's
    fine spacing makes that larger (bf16 0.11, fp16 0.31; fp8 stays at 5 %). Skipping a rank's own part is
    still far outside it: an unrounded 1/N of the elements is a ratio of about sqrt(1/N)."""
    return max(STAT_FRACTION, 2 * flip_ratio(comm_dtype))


def statistical_ratio(cp, rounded_ref, full_ref) -> float:
    """Distance of the context-parallel result to the rounded reference, as a fraction of that reference's
    distance to full-precision communication (the bound: <= STAT_FRACTION)."""
    return rel_l2(cp, rounded_ref) / max(rel_l2(rounded_ref, full_ref), 1e-30)


# ------------------------------------------------------------------------------------------- attention calls
def _inputs(b, s, h, d, masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(b, s, h, d, generator=g) for _ in range(4))
    # Rows of different magnitudes (as activations have): per-row scales must follow them.
    k = k * torch.rand(b, s, h, 1, generator=g).mul(8)
    mask = None
    if masked:
        mask = torch.ones(b, s, dtype=torch.bool)
        mask[0, s - s // 3:] = False
        mask[-1, : s // 5] = False
    return q, k, v, grad, mask


def attention_cases(world, length, heads, masked, schemes, backward):
    """Every mode of `world` ranks x every scheme: forward (and gradients) against the rounded reference."""
    results = []
    head_dim = 64
    q, k, v, grad, mask = _inputs(2, length, heads, head_dim, masked)
    anything = length % world != 0 or heads % world != 0
    for ring, ulysses, rotate in MODES[world]:
        for comm_dtype, fp8_keys in schemes:
            config = make_config(ring, ulysses, rotate_method=rotate, comm_dtype=comm_dtype, comm_fp8_keys=fp8_keys,
                                 ulysses_anything=anything and ulysses > 1, ring_anything=anything and ring > 1)
            ref_q, ref_k, ref_v = (t.clone().requires_grad_(backward) for t in (q, k, v))
            reference = rounded_reference(ref_q, ref_k, ref_v, mask, ring, ulysses, comm_dtype, fp8_keys)
            full = rounded_reference(q, k, v, mask, ring, ulysses, None, False)
            lq, lk, lv = (shard(t).requires_grad_(backward) for t in (q, k, v))
            with torch.set_grad_enabled(backward):
                out = context_parallel_attention(lq, lk, lv, None if mask is None else shard(mask), config=config)
            where = f"rank {dist.get_rank()} ring={ring} ulysses={ulysses} {rotate} {comm_dtype} fp8_keys={fp8_keys}"
            record = dict(mode=(ring, ulysses, rotate), scheme=(str(comm_dtype), fp8_keys))
            if ulysses == 1:
                record["max_rel"] = rel_err(out, shard(reference))
                assert record["max_rel"] <= FP32_TOL, (where, record)
            else:
                # Statistical over the whole output: gathered, so every rank checks the same numbers.
                whole = _all_gather_seq(out.detach(), length)
                record["ratio"] = statistical_ratio(whole, reference.detach(), full)
                assert record["ratio"] <= stat_bound(comm_dtype), (where, record)
            if backward:
                out.backward(shard(grad))
                reference.backward(grad)
                record["grad"] = max(rel_err(a.grad, shard(b.grad)) for a, b in ((lq, ref_q), (lk, ref_k), (lv, ref_v)))
                assert record["grad"] <= FP32_TOL, (where, record)
            results.append(record)
    return results


def _all_gather_seq(x, length):
    """The whole (B, S, ...) tensor from every rank's shard (pieces of tensor_split: uneven ones allowed)."""
    world = dist.get_world_size()
    sizes = [len(p) for p in torch.arange(length).tensor_split(world)]
    longest = max(sizes)
    padded = torch.cat([x, x.new_zeros((x.shape[0], longest - x.shape[1]) + tuple(x.shape[2:]))], dim=1)
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded.contiguous())
    return torch.cat([p[:, :n] for p, n in zip(pieces, sizes)], dim=1)


@pytest.mark.parametrize("world", [2, 4])
def test_attention_forward_and_gradients(pool, world):
    """Every mode, every scheme, even and uneven lengths (the anything flags), with and without a padding
    mask, heads that the degree does not divide at four ranks; gradients for fp8 and bf16."""
    runs = [(64, 4, False, SCHEMES, False), (61, 4, True, SCHEMES, False),
            (64, 4, True, [(FP8, False), (torch.bfloat16, False)], True),
            (61, 6 if world == 4 else 4, False, [(FP8, True)], True)]
    for length, heads, masked, schemes, backward in runs:
        pool(world).run(attention_cases, world, length, heads, masked, schemes, backward, timeout=300)


def telling_apart():
    """The statistical bound separates the right rounding from near misses (Ulysses, two ranks, fp8)."""
    length, heads, d = 64, 4, 64
    q, k, v, _, _ = _inputs(2, length, heads, d, False)
    config = make_config(1, 2, comm_dtype=FP8)
    tk = precision.travel_dtype(FP8, k.dtype, key=True)

    def skip_own(x, travel):
        # A scheme that rounds only what leaves a rank: rank j keeps its sequence half of head half j.
        r = precision.round_trip(x, travel)
        for rows, cols in zip(torch.arange(length).tensor_split(2), torch.arange(heads).tensor_split(2)):
            r[:, rows[:, None], cols] = x[:, rows[:, None], cols]
        return r

    def per_token(x, travel):
        # Another: one scale per token (over all heads) instead of one per (token, head).
        return precision.round_trip(x.flatten(-2), travel).view_as(x)

    with torch.no_grad():
        out = _all_gather_seq(context_parallel_attention(shard(q), shard(k), shard(v), config=config), length)
        reference = rounded_reference(q, k, v, None, 1, 2, FP8, False)
        full = rounded_reference(q, k, v, None, 1, 2, None, False)
        near_misses = []
        for scheme in (skip_own, per_token):
            o = rounded_reference(scheme(q, FP8), scheme(k, tk), scheme(v, FP8), None, 1, 1, None, False)
            near_misses.append(statistical_ratio(scheme(o, FP8), reference, full))
    return statistical_ratio(out, reference, full), *near_misses


def test_the_bound_tells_schemes_apart(pool):
    right, skipped, other = pool(2).run(telling_apart)[0]
    print(dict(right=right, skipped_own_part=skipped, per_token_scale=other))
    assert right <= STAT_FRACTION < skipped and STAT_FRACTION < other, (right, skipped, other)


# ------------------------------------------------------------------------------------------- models
def model_cases(world, family, uneven, schemes, backward, modes=None):
    """A tiny Flux or Wan with head_dim 64 in every mode of `world` ranks x `schemes`: output (and parameter
    gradients) against the one-process model whose SDPA rounds alike (`RoundedSDPA`)."""
    from cp_hooks import reduce_gradients
    from cp_hooks.verify.catalogue import get_entry

    if family == "flux":
        from cp_hooks.verify.models.flux import _flux

        entry = get_entry("FluxTransformer2DModel")
        model, inputs = entry.build("t2i", overrides=dict(attention_head_dim=64, axes_dims_rope=(16, 24, 24)))
        if uneven:  # 7 text + 24 image tokens: neither divides by the ranks
            inputs = _flux(dict(model.config), torch.Generator().manual_seed(1), text=7)
    else:
        from cp_hooks.verify.models.wan import _wan

        entry = get_entry("WanTransformer3DModel")
        model, inputs = entry.build("t2v", overrides=dict(attention_head_dim=64))
        if uneven:  # 2 x 4 x 5 = 40 ... 3 x 3 x 5 = 45 tokens
            inputs = _wan(dict(model.config), torch.Generator().manual_seed(1), frames=3, height=6, width=10)
    results = []
    for ring, ulysses, rotate in modes or MODES[world]:
        flags = dict(ulysses_anything=uneven and ulysses > 1, ring_anything=uneven and ring > 1)
        with torch.no_grad():
            full = model(**inputs)[0]
        for comm_dtype, fp8_keys in schemes:
            with RoundedSDPA(ring, ulysses, comm_dtype, fp8_keys), torch.set_grad_enabled(backward):
                reference = model(**inputs)[0]
            if backward:
                reference.square().mean().backward()
                ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
                model.zero_grad()
                model(**inputs)[0].square().mean().backward()  # full-precision communication's gradients
                full_grads = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if n in ref_grads])
                model.zero_grad()
            config = make_config(ring, ulysses, rotate_method=rotate, comm_dtype=comm_dtype, comm_fp8_keys=fp8_keys,
                                 **flags)
            enable_parallelism(model, config)
            try:
                with torch.set_grad_enabled(backward):
                    out = model(**inputs)[0]
                record = dict(mode=(ring, ulysses, rotate), scheme=(str(comm_dtype), fp8_keys),
                              ratio=statistical_ratio(out.detach(), reference.detach(), full),
                              error=rel_l2(reference.detach(), full))
                where = f"{family} rank {dist.get_rank()} {record}"
                if not KEEP_GOING:
                    assert record["ratio"] <= stat_bound(comm_dtype), where
                if backward:
                    out.square().mean().backward()
                    reduce_gradients(model, config)
                    # Gradients through a rounded forward: the statistical measure over all parameters.
                    cp = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if n in ref_grads])
                    ref = torch.cat([g.flatten() for g in ref_grads.values()])
                    # Through a rounded forward the gradients inherit its boundary crossings: statistical, too.
                    record["grad_ratio"] = statistical_ratio(cp, ref, full_grads)
                    model.zero_grad()
                    if not KEEP_GOING:
                        assert record["grad_ratio"] <= stat_bound(comm_dtype), where
            finally:
                disable_parallelism(model)
            results.append(record)
    return results


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_models_two_ranks(pool, family):
    """Every two-rank mode: bf16, fp8 with bf16 keys, fp8 keys; uneven lengths (anything flags) with fp8."""
    schemes = [(torch.bfloat16, False), (FP8, False), (FP8, True)]
    pool(2).run(model_cases, 2, family, False, schemes, False, timeout=600)
    pool(2).run(model_cases, 2, family, True, [(FP8, False)], False, timeout=600)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_model_gradients(pool, family):
    """Training through a model: parameter gradients (after reduce_gradients) against the one-process model
    rounded alike with straight-through gradients; fp8 in every two-rank mode."""
    pool(2).run(model_cases, 2, family, False, [(FP8, False)], True, timeout=600)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_models_four_ranks(pool, family):
    """Pure Ulysses and hybrid at four ranks (the ring alone is covered at two; four ranks on a few shared
    cores are slow)."""
    modes = [(1, 4, "allgather"), (2, 2, "alltoall")]
    pool(4).run(model_cases, 4, family, False, [(torch.bfloat16, False), (FP8, False)], False, modes, timeout=600)


# ------------------------------------------------------------------------------------------- bytes
def wire_row(head_dim, travel, dtype=torch.float32) -> int:
    return precision.wire_bytes_per_row(head_dim, dtype, travel)


def expected_attention_bytes(ring, ulysses, rotate, length, rank, batch, heads, head_dim, comm_dtype, fp8_keys):
    """Exact per-rank "attention" bytes of one forward call (tests/test_comm_stats.py's counting, with e = the
    payload's element size + 4 bytes per (token, head) for fp8 scales)."""
    tq, tk, tv = _travels(comm_dtype, fp8_keys, torch.float32)
    sizes = [len(p) for p in torch.arange(length).tensor_split(ring * ulysses)]
    ring_idx = rank // ulysses
    group_len = [sum(sizes[g * ulysses:(g + 1) * ulysses]) for g in range(ring)]
    per_rank_heads = -(-heads // ulysses)

    def rows(travel):  # bytes of one token's heads of one rank's slice, over the batch
        return batch * per_rank_heads * wire_row(head_dim, travel)

    data = 0
    if ulysses > 1:
        own = sizes[rank]
        data += own * (ulysses - 1) * (rows(tq) + rows(tk) + rows(tv)) + (group_len[ring_idx] - own) * rows(tv)
    if ring > 1:
        if rotate == "alltoall":
            sent = sum(group_len) - group_len[(ring_idx + 1) % ring]
        else:
            sent = max(group_len) * (ring - 1)
        data += sent * (rows(tk) + rows(tv))
    return data


def count_bytes(world, length, heads, head_dim):
    torch.manual_seed(0)
    batch = 2
    q, k, v = (torch.randn(batch, length, heads, head_dim) for _ in range(3))
    anything = length % world != 0
    records = []
    for ring, ulysses, rotate in MODES[world]:
        for comm_dtype, fp8_keys in [(None, False)] + SCHEMES:
            config = make_config(ring, ulysses, rotate_method=rotate, comm_dtype=comm_dtype, comm_fp8_keys=fp8_keys,
                                 ulysses_anything=anything and ulysses > 1, ring_anything=anything and ring > 1)
            with torch.no_grad(), comm_stats() as stats:
                context_parallel_attention(shard(q), shard(k), shard(v), config=config)
            expected = expected_attention_bytes(ring, ulysses, rotate, length, dist.get_rank(), batch, heads, head_dim,
                                                comm_dtype, fp8_keys)
            sent = stats.payload_sent.get("attention", 0)
            assert sent == expected, (ring, ulysses, rotate, str(comm_dtype), fp8_keys, sent, expected)
            records.append(dict(mode=(ring, ulysses, rotate), scheme=(str(comm_dtype), fp8_keys), sent=sent))
    return records


@pytest.mark.parametrize("world,length", [(2, 64), (2, 61), (4, 64), (4, 61)])
def test_bytes_match_formula(pool, world, length):
    pool(world).run(count_bytes, world, length, 4, 64)


def _ratio(records, mode, scheme, base=("torch.bfloat16", False)):
    by = {(r["mode"], r["scheme"]): r["sent"] for r in records}
    return by[(mode, scheme)] / by[(mode, base)]


def test_byte_goals(pool):
    """The issue's goals at head_dim 128 (Flux's, Wan's): Ulysses fp8 with bf16 keys <= 0.66x the bytes of bf16
    communication, with fp8 keys <= 0.53x; the ring's K/V with fp8 keys <= 0.53x. (At head_dim 64 the 4-byte
    scale adds 1/16 instead of 1/32: 0.648x and 0.531x.)"""
    records = pool(2).run(count_bytes, 2, 64, 4, 128)[0]
    fp8, fp8_keys = ("torch.float8_e4m3fn", False), ("torch.float8_e4m3fn", True)
    ulysses, ring = (1, 2, "allgather"), (2, 1, "alltoall")
    goals = {"ulysses fp8 + bf16 keys": (_ratio(records, ulysses, fp8), 0.66),
             "ulysses fp8 keys": (_ratio(records, ulysses, fp8_keys), 0.53),
             "ring fp8 keys": (_ratio(records, ring, fp8_keys), 0.53)}
    print({k: round(v, 4) for k, (v, _) in goals.items()})
    assert all(v <= goal for v, goal in goals.values()), goals


# ------------------------------------------------------------------------------------------- compile
def compiled_fp8(ring, ulysses, rotate, regional):
    """torch.compile(fullgraph=True) with fp8 communication: 0 graph breaks, forward and backward; no
    recompile across steps; the compiled result equals the eager one (the same code inside the operators)."""
    import tiny_models
    from cp_hooks import reduce_gradients

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model, inputs = tiny_models.tiny_flux()
    config = make_config(ring, ulysses, rotate_method=rotate, comm_dtype=FP8)
    enable_parallelism(model, config)
    try:
        eager = model(**inputs)[0]
        eager.square().mean().backward()
        reduce_gradients(model, config)
        eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        if regional:
            model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
            compiled = model
        else:
            compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(**inputs)[0]
        out.square().mean().backward()
        reduce_gradients(model, config)
        grad_err = max(rel_err(p.grad, eager_grads[n]) for n, p in model.named_parameters() if n in eager_grads)
        with torch.no_grad():
            compiled(**inputs)
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
            for step in range(2):
                g = torch.Generator().manual_seed(10 + step)
                compiled(**dict(inputs, timestep=torch.rand(1, generator=g),
                                hidden_states=torch.randn(inputs["hidden_states"].shape, generator=g)))
        breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    finally:
        disable_parallelism(model)
    assert breaks == 0, dict(torch._dynamo.utils.counters["graph_break"])
    assert rel_err(out, eager) <= FP32_TOL and grad_err <= FP32_TOL, (rel_err(out, eager), grad_err)
    return rel_err(out, eager), grad_err


@pytest.mark.parametrize("ring,ulysses,rotate,regional", [(1, 2, "allgather", False), (2, 1, "alltoall", False),
                                                           (1, 2, "allgather", True)])
def test_compile_fp8(pool, ring, ulysses, rotate, regional):
    pool(2).run(compiled_fp8, ring, ulysses, rotate, regional, timeout=300)


# ------------------------------------------------------------------------------------------- refusals
def test_config_refusals():
    from cp_hooks import ContextParallelConfig

    with pytest.raises(ValueError, match="not supported"):
        ContextParallelConfig(ulysses_degree=2, comm_dtype=torch.float32)
    with pytest.raises(ValueError, match="fp8"):
        ContextParallelConfig(ulysses_degree=2, comm_dtype=torch.bfloat16, comm_fp8_keys=True)
    with pytest.raises(ValueError, match="Unknown"):
        ContextParallelConfig(ulysses_degree=2, comm_dtype="float9")
    assert ContextParallelConfig(ulysses_degree=2, comm_dtype="float8_e4m3fn").comm_dtype is FP8


def dropout_refused():
    config = make_config(1, 2, comm_dtype=FP8)
    q = torch.randn(1, 8, 2, 64)
    with pytest.raises(ValueError, match="dropout"):
        context_parallel_attention(q, q, q, dropout_p=0.1, config=config)
    return True


def test_dropout_refused(pool):
    pool(2).run(dropout_refused)


def test_formulas():
    """The fp8 rounding is the issue's formula exactly; zero rows keep scale 1; bf16 keys under fp8."""
    x = torch.randn(3, 5, 64) * torch.rand(3, 5, 1) * 100
    x[0, 0] = 0
    scale = x.abs().amax(-1, keepdim=True) / torch.finfo(FP8).max
    scale[0, 0] = 1
    expected = ((x / scale).to(FP8).float() * scale)
    assert torch.equal(precision.round_trip(x, FP8), expected)
    assert precision.pack(x, FP8).shape == (3, 5, 68) and precision.pack(x, FP8).dtype == torch.uint8
    assert precision.travel_dtype(FP8, torch.float32, key=True) == torch.bfloat16
    assert precision.travel_dtype(FP8, torch.float16, key=True) is None  # its own dtype: no wider than bf16
    assert precision.travel_dtype(FP8, torch.float32, key=True, fp8_keys=True) == FP8
    assert precision.travel_dtype(torch.float16, torch.bfloat16) is None  # no re-cast at equal width
    assert precision.travel_dtype(None, torch.float32) is None

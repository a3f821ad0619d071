"""Every rank's lengths in the anything modes: exchanged in the first eager forward of a shape, remembered after.

`cp_hooks.length_memo`: the first forward of a signature (model + input shapes) exchanges each attention
call's and uneven gather's lengths; later forwards of that signature exchange none (comm_stats' "sizes"
payload stays empty) and still equal one process. A model whose shard lengths change with values under one
signature makes every rank raise the same error at the forward's end, and the next forward is exact again.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cp_hooks import (
    ContextParallelInput,
    ContextParallelOutput,
    comm_stats,
    disable_parallelism,
    enable_parallelism,
    reduce_gradients,
)
from cp_hooks.forward import value_checks
from cp_hooks.forward.length_memo import LengthMemo, conform, signature
from cp_testing import FP32_TOL, make_config, rel_err
from tiny_models import tiny_flux, tiny_wan


# ----------------------------------------------------------------------------------------------- unit
class _Exchange:
    """A stand-in collective: counts its calls and returns fixed rows."""

    def __init__(self, rows):
        self.rows, self.calls = rows, 0

    def __call__(self):
        self.calls += 1
        return self.rows


def test_remembered_by_position_signature_and_split_state():
    memo, exchange = LengthMemo(), _Exchange([[5, 7], [4, 6]])
    state = ((9,), ())
    memo.begin("A")
    assert memo.lengths((5, 7), state, 0, exchange) == [[5, 4], [7, 6]]
    assert memo.lengths((5, 7), state, 0, exchange) == [[5, 4], [7, 6]]  # a second call: its own position
    memo.end()
    assert exchange.calls == 2
    value_checks.begin_forward("owner")
    memo.begin("A")
    memo.lengths((5, 7), state, 0, exchange)
    memo.lengths((5, 7), state, 0, exchange)
    memo.end()
    assert value_checks.end_forward("owner").failures == []
    assert exchange.calls == 2  # the same signature: nothing exchanged
    memo.begin("A")
    memo.lengths((5, 7), ((11,), ()), 0, exchange)  # another split before the call: exchanged again
    memo.end()
    memo.begin("B")
    memo.lengths((5, 7), state, 0, exchange)  # another signature
    memo.end()
    assert exchange.calls == 4
    memo.lengths((5, 7), state, 0, exchange)  # outside a forward: always exchanged
    for _ in range(2):
        memo.begin(None)
        memo.lengths((5, 7), state, 0, exchange)  # a forward that remembers nothing (no anything flag)
        memo.end()
    assert exchange.calls == 7


def test_a_changed_local_length_is_recorded_and_the_signature_forgotten():
    memo, exchange = LengthMemo(), _Exchange([[5], [4]])
    memo.begin("A")
    memo.lengths((4,), (), 1, exchange)
    memo.end()
    value_checks.begin_forward("owner")
    memo.begin("A")
    assert memo.lengths((3,), (), 1, exchange) == [[5, 4]]  # the remembered lengths, for the collectives
    memo.end()
    record = value_checks.end_forward("owner")
    assert [kind for kind, _ in record.failures] == ["lengths"]
    assert exchange.calls == 1
    memo.forget("A")
    for _ in range(2):
        memo.begin("A")
        memo.lengths((4,), (), 1, exchange)
        memo.end()
    assert exchange.calls == 3  # exchanged every call from then on


def test_signature_reads_shapes_and_discrete_values_only():
    owner = object()
    a = signature(owner, (torch.zeros(2, 3),), dict(t=0.5, n=4, flag=True, ids=[torch.zeros(5)]))
    b = signature(owner, (torch.ones(2, 3),), dict(t=0.7, n=4, flag=True, ids=[torch.ones(5)]))
    assert a == b  # values and floats set no length
    assert a != signature(owner, (torch.zeros(2, 4),), dict(t=0.5, n=4, flag=True, ids=[torch.zeros(5)]))
    assert a != signature(owner, (torch.zeros(2, 3),), dict(t=0.5, n=5, flag=True, ids=[torch.zeros(5)]))
    assert a != signature(object(), (torch.zeros(2, 3),), dict(t=0.5, n=4, flag=True, ids=[torch.zeros(5)]))
    # Integer and boolean values (masks) are read; a layout with no bytes to read stands by its shape.
    mask = torch.tensor([True, True, False])
    assert signature(owner, (mask,), {}) != signature(owner, (torch.tensor([True, False, False]),), {})
    assert signature(owner, (mask.to(torch.uint16),), {}) != signature(owner, (mask.to(torch.int64),), {})
    sparse = torch.sparse_coo_tensor([[0]], [1], (3,))
    assert signature(owner, (sparse,), {}) == signature(owner, (torch.sparse_coo_tensor([[1]], [2], (3,)),), {})


def test_conform_pads_and_cuts():
    x = torch.arange(6.0).view(1, 3, 2)
    assert torch.equal(conform(x, 3, 1), x)
    assert torch.equal(conform(x, 2, 1), x[:, :2])
    assert torch.equal(conform(x, 4, 1), torch.cat([x, torch.zeros(1, 1, 2)], dim=1))


# ----------------------------------------------------------------------------------------------- models
def _sizes_sent(stats) -> int:
    return stats.as_dict()["payload_sent"].get("sizes", 0)


def remembered_in_models(ring, ulysses, rotate):
    """Flux and Wan with uneven shards: the second forward of a shape exchanges no length, and all are exact."""
    flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    config = make_config(ring, ulysses, rotate_method=rotate, **flags)
    for builder, shapes in ((tiny_flux, [dict(height=7, width=5), dict(height=5, width=3)]),
                            (tiny_wan, [dict(height=6, width=10), dict(height=10, width=6, frames=1)])):
        model, _ = builder()
        steps = []
        for step, index in enumerate([0, 0, 1, 1, 0]):
            inputs = dict(builder(**shapes[index])[1])
            inputs["timestep"] = inputs["timestep"] * (1 + step)  # a new step: values change, shapes do not
            with torch.no_grad():
                steps.append((inputs, model(**inputs)[0], step in (1, 3, 4)))
        enable_parallelism(model, config)
        for step, (inputs, reference, seen_before) in enumerate(steps):
            with torch.no_grad(), comm_stats() as stats:
                out = model(**inputs)[0]
            assert rel_err(out, reference) <= FP32_TOL, (builder.__name__, step)
            assert (_sizes_sent(stats) == 0) == seen_before, (builder.__name__, step, _sizes_sent(stats))
        disable_parallelism(model)


def remembered_with_gradients(ring, ulysses):
    """Training forwards: the second exchanges no length, and its gradients equal one process'."""
    flags = dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    config = make_config(ring, ulysses, **flags)
    model, inputs = tiny_flux(height=7, width=5)
    model(**inputs)[0].square().mean().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    enable_parallelism(model, config)
    sent = []
    for _ in range(2):
        model.zero_grad()
        with comm_stats() as stats:
            model(**inputs)[0].square().mean().backward()
        sent.append(_sizes_sent(stats))
        reduce_gradients(model, config)
        worst = max(rel_err(p.grad, reference[n]) for n, p in model.named_parameters() if p.grad is not None)
        assert worst <= FP32_TOL, worst
    disable_parallelism(model)
    assert sent[0] > 0 and sent[1] == 0, sent


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")])
def test_second_forward_of_a_shape_exchanges_no_length(pool, ring, ulysses, rotate):
    pool(2).run(remembered_in_models, ring, ulysses, rotate)


def test_second_forward_exchanges_no_length_on_four_ranks(pool):
    pool(4).run(remembered_in_models, 2, 2, "alltoall")


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_training_forwards_remember_lengths(pool, ring, ulysses):
    pool(2).run(remembered_with_gradients, ring, ulysses)


def prompts_of_one_shape(ring, ulysses):
    """Mochi keeps each rank's valid text tokens: prompts padded to one shape give other per-rank lengths.
    The mask is read into the signature, so a new prompt exchanges again (no error) and a seen one does not."""
    from cp_hooks.verify.catalogue import get_entry
    from cp_hooks.verify.catalogue._inputs import padding_mask

    config = make_config(ring, ulysses, ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    model, inputs = get_entry("MochiTransformer3DModel").build()
    prompts = [(0, 7), (3, 10), (0, 7), (5, 2)]  # valid text tokens per sample, of 10
    cases = [dict(inputs, encoder_attention_mask=padding_mask(2, 10, list(valid))) for valid in prompts]
    with torch.no_grad():
        references = [model(**case)[0] for case in cases]
        enable_parallelism(model, config)
        for i, (case, reference) in enumerate(zip(cases, references)):
            with comm_stats() as stats:
                out = model(**case)[0]
            assert rel_err(out, reference) <= FP32_TOL, i
            assert (_sizes_sent(stats) == 0) == (prompts[i] in prompts[:i]), (i, _sizes_sent(stats))
        disable_parallelism(model)


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_a_new_prompt_of_the_same_shape_exchanges_again(pool, ring, ulysses):
    pool(2).run(prompts_of_one_shape, ring, ulysses)


# ----------------------------------------------------------------------------------------------- value-dependent
PAD = 100.0


class TrimsPadding(nn.Module):
    """Drops trailing padding tokens (first feature == PAD) after the plan's split: a shard length set by values."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 4)

    def forward(self, tokens):
        keep = int((tokens[0, :, 0] != PAD).sum())
        x = tokens[:, :keep]
        q, k, v = self.qkv(x).view(1, keep, 3, 2, 2).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, keep, 4))


TRIM_PLAN = {"": {"tokens": ContextParallelInput(split_dim=1, expected_dims=3)},
             "out": ContextParallelOutput(gather_dim=1, expected_dims=3)}


def value_dependent_lengths(ring, ulysses):
    """The same input shape with padding at the end: the last rank's shard shrinks. Every rank raises, then
    the signature is exchanged every call and the forward is exact."""
    config = make_config(ring, ulysses, ulysses_anything=ulysses > 1, ring_anything=ring > 1)
    model = TrimsPadding()
    g = torch.Generator().manual_seed(3)
    plain, padded = torch.randn(1, 9, 4, generator=g), torch.randn(1, 9, 4, generator=g)
    padded[:, -2:, 0] = PAD
    with torch.no_grad():
        references = [model(plain), model(padded)]
        enable_parallelism(model, config, plan=TRIM_PLAN)
        assert rel_err(model(plain), references[0]) <= FP32_TOL
        with pytest.raises(value_checks.ValueCheckError, match=r"depend on values.*rank\(s\) \[1\]"):
            model(padded)  # the last rank's shard shrank; both raise
        for tokens, reference in ((padded, references[1]), (plain, references[0]), (padded, references[1])):
            assert rel_err(model(tokens), reference) <= FP32_TOL
        disable_parallelism(model)


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_value_dependent_lengths_raise_on_every_rank_then_exchange(pool, ring, ulysses):
    pool(2).run(value_dependent_lengths, ring, ulysses)

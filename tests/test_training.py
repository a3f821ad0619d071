"""The training loop of examples/train.py with context parallelism against the same loop in one process.

After a few optimizer steps (gradient clipping included) the weights of every context-parallel rank must
equal those of the single-process run, and be identical across the ranks:
  * fp32 with SGD (momentum 0.9): max |difference| / max(1, |weight|) <= 1e-5 (docs/architecture.md's fp32 bound);
  * fp64 with AdamW: <= 1e-10. AdamW divides every gradient element by its running magnitude + 1e-8, so
    in fp32 an element whose gradient is ~1e-8 turns a 1e-10 rounding difference into a sizable fraction
    of the learning rate (measured: up to 1.5e-5 after 3 steps at lr 1e-3, while the reduced gradients
    agree to 3e-7 of their scale). That is the optimizer's conditioning, not context parallelism; in fp64
    the rounding is gone and the whole AdamW loop must agree.
Without `reduce_gradients` the gradients are partial and must differ.
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
import torch.distributed as dist

from cp_hooks import disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL, make_config

# The loop under test is the example's own; the worker processes import it from the same place.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import train as train_example  # noqa: E402

LOOP = dict(steps=3, batch_size=2, max_grad_norm=1.0, height=8, width=6)
TEXT_LEN = 6
TOLERANCE = {torch.float32: FP32_TOL, torch.float64: 1e-10}


def same_on_every_rank(model) -> bool:
    """True when every rank holds bitwise the weights of rank 0."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    rank0 = flat.clone()
    dist.broadcast(rank0, src=0)
    agree = torch.tensor([int(torch.equal(flat, rank0))])
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    return bool(agree.item())


def train_parity(ring: int, ulysses: int, rotate: str, optimizer: str, dtype: torch.dtype) -> dict:
    loop = dict(LOOP, optimizer=optimizer)
    tol = TOLERANCE[dtype]
    model = train_example.build_transformer(seed=0).to(dtype)
    initial = copy.deepcopy(model)
    dataset = train_example.SyntheticDataset(model, samples=8, height=LOOP["height"], width=LOOP["width"],
                                             text_len=TEXT_LEN)
    reference = copy.deepcopy(model)
    ref_losses = train_example.train(reference, dataset, **loop)

    config = make_config(ring, ulysses, rotate_method=rotate)
    enable_parallelism(model, config)
    losses = train_example.train(model, dataset, config=config, **loop)
    disable_parallelism(model)

    err = train_example.weight_error(model, reference)
    moved = train_example.weight_error(reference, initial)
    assert moved > 1e-3, f"the weights barely moved ({moved:.1e}): the comparison would prove nothing"
    assert err <= tol, f"rank {dist.get_rank()}: weights differ from one process by {err:.2e} > {tol}"
    assert same_on_every_rank(model), "context-parallel ranks ended with different weights"
    # The losses are compared with the bound of their own dtype (the loop takes the loss in at least fp32).
    loss_tol = TOLERANCE[torch.promote_types(dtype, torch.float32)]
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= loss_tol * max(1.0, max(ref_losses))
    return dict(err=err, losses=losses)


MODES = [(1, 2, "allgather"), (2, 1, "alltoall"), (2, 1, "allgather")]


@pytest.mark.parametrize("ring,ulysses,rotate", MODES)
def test_sgd_fp32_matches_one_process(pool, ring, ulysses, rotate):
    results = pool(2).run(train_parity, ring, ulysses, rotate, "sgd", torch.float32)
    assert results[0]["losses"] == results[1]["losses"]  # every rank computes the same, full loss


@pytest.mark.parametrize("ring,ulysses,rotate", MODES[:2])
def test_adamw_fp64_matches_one_process(pool, ring, ulysses, rotate):
    results = pool(2).run(train_parity, ring, ulysses, rotate, "adamw", torch.float64)
    assert results[0]["losses"] == results[1]["losses"]  # every rank computes the same, full loss


def partial_gradients_differ() -> float:
    """One backward without `reduce_gradients`: each rank holds only its tokens' share of the gradient."""
    model = train_example.build_transformer(seed=0)
    dataset = train_example.SyntheticDataset(model, samples=2, height=8, width=6, text_len=TEXT_LEN)
    batch = {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}
    ids = train_example.flux_ids(8, 6, TEXT_LEN)
    train_example.flow_matching_loss(model, batch, *ids).backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    enable_parallelism(model, make_config(1, 2))
    train_example.flow_matching_loss(model, batch, *ids).backward()
    disable_parallelism(model)
    return max((p.grad - full[n]).abs().max().item() / max(1.0, full[n].abs().max().item())
               for n, p in model.named_parameters())


def test_without_reduce_gradients_the_gradients_are_partial(pool):
    assert min(pool(2).run(partial_gradients_differ)) > 1e-3


def reduce_with_unused_parameters(bucket_bytes: int) -> str:
    """Ranks disagree on which parameters got a gradient: a missing one counts as zero, none anywhere stays None."""
    from cp_hooks import reduce_gradients

    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(dict(a=torch.nn.Linear(4, 3), b=torch.nn.Linear(3, 5), unused=torch.nn.Linear(2, 2),
                                     wide=torch.nn.Linear(2, 2).to(torch.float64)))
    x = torch.full((2, 4), float(rank + 1))
    out = model["a"](x)
    if rank == 0:  # only rank 0's tokens reach `b`; only rank 1's reach the fp64 layer
        out = model["b"](out)
    else:
        out = out.sum() + model["wide"](torch.ones(1, 2, dtype=torch.float64)).sum().float()
    out.sum().backward()
    expected = {}
    for name, p in model.named_parameters():
        g = torch.zeros_like(p) if p.grad is None else p.grad.clone()
        dist.all_reduce(g)
        expected[name] = g
    reduce_gradients(model, make_config(1, 2), bucket_bytes=bucket_bytes)
    for name, p in model.named_parameters():
        if name.startswith("unused"):
            assert p.grad is None, f"{name}: no rank has a gradient, so it must stay None"
        else:
            assert p.grad is not None and torch.equal(p.grad, expected[name]), name
    return "ok"


@pytest.mark.parametrize("bucket_bytes", [1 << 20, 16])  # one bucket per dtype; a bucket per tensor
def test_reduce_gradients_with_unused_parameters(pool, bucket_bytes):
    pool(2).run(reduce_with_unused_parameters, bucket_bytes)


def reduce_with_different_models() -> str:
    from cp_hooks import reduce_gradients

    model = torch.nn.Linear(2, 2) if dist.get_rank() == 0 else torch.nn.Sequential(torch.nn.Linear(2, 2),
                                                                                     torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="different numbers of trainable parameters"):
        reduce_gradients(model, make_config(1, 2))
    return "refused"


def test_reduce_gradients_refuses_different_models_on_every_rank(pool):
    assert pool(2).run(reduce_with_different_models) == ["refused", "refused"]

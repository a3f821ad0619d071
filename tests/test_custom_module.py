"""A plain nn.Module transformer (not diffusers) that calls SDPA, parallelized by a user-declared plan.

This file doubles as the complete example of a custom plan that docs/models.md points to: self-attention is
sequence-parallel (every SDPA call is routed), the text cross-attention over a replicated context is marked
LocalAttention, and positional embeddings computed for the full sequence are split with split_output.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cp_hooks import (
    ContextParallelInput,
    ContextParallelOutput,
    LocalAttention,
    disable_parallelism,
    enable_parallelism,
    reduce_gradients,
)
from cp_testing import FP32_TOL, make_config, rel_err


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, context=None, pos=None, mask=None):
        context = x if context is None else context
        b = x.shape[0]
        q = self.q(x).view(b, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)  # (B, H, S, D)
        k = self.k(context).view(b, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)
        v = self.v(context).view(b, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)
        if pos is not None:
            q, k = q + pos, k + pos
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(out.transpose(1, 2).reshape(b, -1, x.shape[-1]))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, context, pos, mask=None):
        x = x + self.self_attn(self.norm(x), pos=pos, mask=mask)
        x = x + self.cross_attn(x, context=context)
        return x + self.mlp(x)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding for the *full* sequence: (1, H, S, D) — split after it is computed."""

    def __init__(self, heads, head_dim):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim

    def forward(self, length):
        pos = torch.arange(length, dtype=torch.float32)[:, None]
        freq = torch.arange(self.head_dim, dtype=torch.float32)[None, :]
        return torch.sin(pos / (10.0 ** (freq / self.head_dim)))[None, None].expand(1, self.heads, -1, -1) * 0.1


class TinyDiT(nn.Module):
    def __init__(self, dim=32, heads=4, depth=2):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = PositionalEmbedding(heads, dim // heads)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, 8)

    def forward(self, tokens, context, padding_mask=None):
        x = self.embed(tokens)
        pos = self.pos(tokens.shape[1])
        mask = None if padding_mask is None else padding_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, context, pos, mask)
        return self.head(x)


PLAN = {
    # The positional embedding is computed for the full sequence, then split like the tokens.
    "pos": {0: ContextParallelInput(split_dim=2, expected_dims=4, split_output=True)},
    # Tokens are split where they enter the first block (after the full-length embedding) ...
    "blocks.0": {"x": ContextParallelInput(split_dim=1, expected_dims=3)},
    # ... and the key-padding mask at every block, since each block receives the full mask again.
    "blocks.*": {"mask": ContextParallelInput(split_dim=3, expected_dims=4)},
    "blocks.*.cross_attn": LocalAttention(),  # the context is replicated, not split
    "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


def custom_parity(ring, ulysses, rotate, seq, with_mask, anything=False):
    torch.manual_seed(0)
    model = TinyDiT()
    g = torch.Generator().manual_seed(1)
    tokens, context = torch.randn(2, seq, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    mask = None
    if with_mask:
        mask = torch.ones(2, seq, dtype=torch.bool)
        mask[0, seq // 2:] = False
    reference = model(tokens, context, mask)
    reference.square().mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=anything and ulysses > 1,
                         ring_anything=anything and ring > 1)
    enable_parallelism(model, config, plan=PLAN)
    out = model(tokens, context, mask)
    assert rel_err(out, reference) <= FP32_TOL
    out.square().mean().backward()
    reduce_gradients(model, config)
    worst = max(rel_err(p.grad, ref_grads[n]) for n, p in model.named_parameters())
    assert worst <= FP32_TOL, f"gradient error {worst:.2e}"
    disable_parallelism(model)
    with torch.no_grad():
        assert torch.equal(model(tokens, context, mask), reference.detach())
    return worst


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")])
def test_custom_module_two_ranks(pool, ring, ulysses, rotate, with_mask):
    pool(2).run(custom_parity, ring, ulysses, rotate, 16, with_mask)


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 4, "allgather"), (2, 2, "alltoall"), (4, 1, "alltoall")])
def test_custom_module_four_ranks(pool, ring, ulysses, rotate):
    pool(4).run(custom_parity, ring, ulysses, rotate, 16, True)


def test_custom_module_uneven(pool):
    pool(4).run(custom_parity, 2, 2, "alltoall", 19, True, anything=True)


def cross_attention_calls(mark_local):
    """All-to-all calls of one Ulysses forward, with or without the LocalAttention marking."""
    from cp_hooks import comm_stats

    torch.manual_seed(0)
    model = TinyDiT()
    tokens, context = torch.randn(1, 16, 8), torch.randn(1, 6, 32)
    reference = model(tokens, context)
    plan = PLAN if mark_local else {k: v for k, v in PLAN.items() if k != "blocks.*.cross_attn"}
    enable_parallelism(model, make_config(1, 2), plan=plan)
    with comm_stats() as stats:
        out = model(tokens, context)
    disable_parallelism(model)
    # Replicated keys treated as sharded are duplicated N times, which leaves softmax attention unchanged:
    # forgetting the marking costs communication and compute, not correctness.
    assert rel_err(out, reference) <= FP32_TOL
    return stats.calls["all_to_all"]


def test_local_attention_runs_without_communication(pool):
    marked = pool(2).run(cross_attention_calls, True)[0]
    unmarked = pool(2).run(cross_attention_calls, False)[0]
    depth = 2
    assert marked == 4 * depth  # q, k, v in and the output back, self-attention only
    assert unmarked == 8 * depth


class NeedsWholeSequence(nn.Module):
    """A module that must see the whole sequence (it normalises over it), inside an otherwise split model."""

    def forward(self, x, keep):
        weights = keep.float()[..., None]
        return x - (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)


class PooledDiT(TinyDiT):
    def __init__(self):
        super().__init__()
        self.whole = NeedsWholeSequence()
        self.tail = nn.Linear(8, 8)

    def forward(self, tokens, context, padding_mask):
        x = self.embed(tokens)
        x = self.whole(x, padding_mask)  # needs every token: its inputs are gathered back
        for block in self.blocks:
            x = block(x, context, None, padding_mask[:, None, None, :])
        return self.tail(self.head(x))  # `tail` runs after the final gather, on every rank (as SkyReels-V2's)


def gathered_inputs_parity(ring, ulysses):
    """Forward and gradients (parameters and the token input) of a plan that gathers a module's input mid-model
    (its backward must sum the ranks' partial gradients) and has a layer after its final gather."""
    torch.manual_seed(0)
    model = PooledDiT()
    tokens, context = torch.randn(2, 12, 8), torch.randn(2, 5, 32)
    keep = torch.ones(2, 12, dtype=torch.bool)
    keep[1, 7:] = False
    weight = torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(3))
    tokens.requires_grad_()
    reference = model(tokens, context, keep)
    (reference * weight).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_token_grad = tokens.grad.clone()
    model.zero_grad()
    tokens.grad = None
    plan = {
        "": {"tokens": ContextParallelInput(split_dim=1, expected_dims=3),
             "padding_mask": ContextParallelInput(split_dim=1, expected_dims=2)},
        # Gather both inputs of the module that needs them whole, and split its output again.
        "whole": {"x": ContextParallelOutput(gather_dim=1, expected_dims=3),
                  "keep": ContextParallelOutput(gather_dim=1, expected_dims=2),
                  0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
        "blocks.*.cross_attn": LocalAttention(),
        "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
    config = make_config(ring, ulysses)
    enable_parallelism(model, config, plan=plan)
    out = model(tokens, context, keep)
    (out * weight).sum().backward()
    reduce_gradients(model, config)
    disable_parallelism(model)
    err = rel_err(out, reference)
    assert err <= FP32_TOL, err
    for name, param in model.named_parameters():
        grad_err = rel_err(param.grad, ref_grads[name])
        assert grad_err <= FP32_TOL, f"{name}: gradient error {grad_err:.2e}"
    token_grad = tokens.grad.clone()
    torch.distributed.all_reduce(token_grad)  # each rank holds its tokens' share of the input gradient
    assert rel_err(token_grad, ref_token_grad) <= FP32_TOL
    return err


def test_plan_can_gather_a_module_input(pool):
    pool(2).run(gathered_inputs_parity, 1, 2)
    pool(2).run(gathered_inputs_parity, 2, 1)


class NestedPositions(nn.Module):
    """Tables for the whole grid, returned the way some models do: ((cos, sin), {"query": t, "key": t})."""

    def __init__(self, length):
        super().__init__()
        self.length = length

    def forward(self, dim):
        pos = torch.arange(self.length, dtype=torch.float32)[:, None] * torch.linspace(0.1, 1.0, dim)[None]
        return (pos.cos(), pos.sin()), {"query": pos * 0.01, "key": pos * -0.01}


class NestedDiT(nn.Module):
    def __init__(self, dim=16, heads=4, length=12):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(8, dim)
        self.rope = NestedPositions(length)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, 8)

    def forward(self, tokens):
        x = self.embed(tokens)
        b, s, d = x.shape
        (cos, sin), tables = self.rope(d)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = q * cos + tables["query"], k * sin + tables["key"]
        heads = lambda t: t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return self.head(out.transpose(1, 2).reshape(b, -1, d))


def nested_specs_parity(ring, ulysses):
    """Specs nested like the value: a tuple of (cos, sin) tuples and a dict of tables, split at the output."""
    torch.manual_seed(0)
    model = NestedDiT().eval()
    tokens = torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(1))
    reference = model(tokens)
    table = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)
    plan = {
        "": {"tokens": ContextParallelInput(split_dim=1, expected_dims=3)},
        "rope": {0: (table, table), 1: {"query": table, "key": table}},
        "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
    enable_parallelism(model, make_config(ring, ulysses), plan=plan)
    try:
        out = model(tokens)
    finally:
        disable_parallelism(model)
    err = rel_err(out, reference)
    assert err <= FP32_TOL, err
    return err


def test_nested_specs(pool):
    pool(2).run(nested_specs_parity, 1, 2)
    pool(2).run(nested_specs_parity, 2, 1)

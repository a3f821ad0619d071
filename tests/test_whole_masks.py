"""Query x key masks over the whole sequence (block-causal, segment, additive) against one-process SDPA.

Every rank holds the whole (B or 1, 1 or H, S, S) mask, as a model that builds it in `forward` before the
plan's split; context_parallel_attention takes the rows of its queries and gives each key block its columns.
Every mode on 2 and 4 ranks (Ulysses, both ring rotations, hybrid), even and uneven lengths (anything flags),
forward and backward, against float64 SDPA: fp32 relative 1e-5. Also the shape errors, and compile.
"""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cp_hooks import context_parallel_attention
from cp_testing import FP32_TOL, make_config, rel_err, shard

MODES = {2: [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")],
         4: [(1, 4, "allgather"), (4, 1, "alltoall"), (2, 2, "allgather"), (2, 2, "alltoall")]}


def whole_mask(kind: str, batch: int, s: int, heads: int, g: torch.Generator) -> torch.Tensor:
    """A mask every query row of which attends at least one key (SDPA gives NaN for a row with none)."""
    pos = torch.arange(s)
    if kind == "block_causal":  # OmniGen: causal over the first tokens, bidirectional within the last block
        block = torch.where(pos < s // 3, pos, s // 3)
        valid = torch.ones(batch, s, dtype=torch.bool)
        valid[-1, s // 3 - 2: s // 3] = False  # padded condition tokens in the last sample: masked as keys
        mask = (block[None, :, None] >= block[None, None, :]) & valid[:, None, :]
        mask |= torch.eye(s, dtype=torch.bool)  # a padded token still sees itself
        return mask[:, None]
    if kind == "segments":  # Ideogram 4: tokens attend within their own segment
        cuts = torch.randint(1, s, (3,), generator=g)
        seg = (pos[None, :] >= cuts[:, None]).sum(0)
        return (seg[:, None] == seg[None, :])[None, None].expand(batch, 1, s, s)
    if kind == "additive":
        return torch.randn(1, 1, s, s, generator=g)
    if kind == "heads":  # repeated over heads, as some processors pass it
        return whole_mask("block_causal", batch, s, heads, g).expand(batch, heads, s, s)
    raise ValueError(kind)


def parity(ring, ulysses, rotate, length, heads, kind, anything):
    config = make_config(ring, ulysses, rotate_method=rotate,
                         **(dict(ulysses_anything=ulysses > 1, ring_anything=ring > 1) if anything else {}))
    g = torch.Generator().manual_seed(length * 7 + heads)
    q, k, v, grad = (torch.randn(2, length, heads, 8, generator=g) for _ in range(4))
    mask = whole_mask(kind, 2, length, heads, g)
    ref = [t.double().requires_grad_() for t in (q, k, v)]
    ref_mask = mask if mask.dtype == torch.bool else mask.double()
    ref_out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in ref), attn_mask=ref_mask).transpose(1, 2)
    ref_out.backward(grad.double())
    local = [shard(t).requires_grad_() for t in (q, k, v)]
    out = context_parallel_attention(*local, mask, config=config)
    out.backward(shard(grad))
    errors = {"out": rel_err(out, shard(ref_out))}
    errors.update({f"d{n}": rel_err(t.grad, shard(r.grad)) for n, t, r in zip("qkv", local, ref)})
    bad = {n: e for n, e in errors.items() if not e <= FP32_TOL}
    assert not bad, f"rank {dist.get_rank()} ring={ring} ulysses={ulysses} {rotate} len={length} {kind}: {bad}"
    return max(errors.values())


def sweep(world):
    worst = 0.0
    for ring, ulysses, rotate in MODES[world]:
        for kind in ("block_causal", "segments", "additive", "heads"):
            worst = max(worst, parity(ring, ulysses, rotate, 8 * world, 4, kind, anything=False))
            for length, heads in ((2 * world + 1, 3), (13, 4)):
                worst = max(worst, parity(ring, ulysses, rotate, length, heads, kind, anything=True))
    return worst


@pytest.mark.parametrize("world", [2, 4])
def test_whole_masks_match_one_process(pool, world):
    assert max(pool(world).run(sweep, world)) <= FP32_TOL


class _RaisingModel(torch.nn.Module):
    """Checks a mask by value inside an enabled forward, then raises: the check must not outlive the forward."""

    def forward(self, x):
        mask = torch.ones(1, 2, 1, x.shape[1], dtype=torch.bool)  # a key mask repeated over heads: read by value
        q = x.view(1, x.shape[1], 2, 4).transpose(1, 2)
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        raise RuntimeError("boom")


def shape_errors():
    from cp_hooks import ContextParallelInput, disable_parallelism, enable_parallelism

    config = make_config(1, dist.get_world_size())
    model = enable_parallelism(_RaisingModel(), config, plan={"": {"x": ContextParallelInput(1, 3)}})
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(1, 8, 8))
    disable_parallelism(model)
    q = torch.randn(1, 4, 2, 8)
    messages = []
    for mask in (torch.ones(1, 1, 6, 6, dtype=torch.bool),  # neither the local (4) nor the whole (8) length
                 torch.ones(3, 1, 8, 8, dtype=torch.bool),  # batch 3 for a batch of 1
                 torch.randn(1, 2, 8, 8)):  # differs between heads
        try:
            context_parallel_attention(q, q, q, mask, config=config)
        except ValueError as error:
            messages.append(str(error))
    return messages


def test_whole_mask_errors_on_every_rank(pool):
    # Direct calls refuse at once, also after an enabled forward that raised (its value checks ended with it).
    for messages in pool(2).run(shape_errors):
        assert len(messages) == 3
        assert "must cover the whole sequence" in messages[0] and "must cover the whole sequence" in messages[1]
        assert "differs between heads" in messages[2]


def compiled(ring, ulysses):
    config = make_config(ring, ulysses)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 16, 4, 8, generator=g) for _ in range(3))
    mask = whole_mask("block_causal", 2, 16, 4, g)
    ref = F.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (q, k, v)), attn_mask=mask)

    def fn(q, k, v, mask):
        return context_parallel_attention(q, k, v, mask, config=config)

    torch._dynamo.reset()
    out = torch.compile(fn, fullgraph=True)(*(shard(t) for t in (q, k, v)), mask)
    return rel_err(out, shard(ref.transpose(1, 2)))


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_whole_mask_compiles_fullgraph(pool, ring, ulysses):
    assert max(pool(2).run(compiled, ring, ulysses)) <= FP32_TOL

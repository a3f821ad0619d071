"""`comm_stats()` counts what the communication formulas of docs/architecture.md say, in every mode, even and uneven.

The formulas (per attention call, forward, per rank; b·L·d·e = batch × full sequence × hidden × bytes):
    Ulysses  4·bLde·(N−1)/N²            ring  2·bLde·(N−1)/N            hybrid  4·bLde·(u−1)/(N·u) + 2·bLde·(r−1)/N
They assume equal shards. For uneven shards the same counting gives an exact per-rank generalisation
(`expected_data_bytes`), whose sum over ranks is still N × the formula (all-gather excepted: it pads every
piece to the longest, and the padding is sent). Key-padding masks and the size exchange of the anything
modes are counted under their own payloads ("mask", "sizes"), outside the formulas ("attention").
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.distributed as dist

from cp_hooks import comm_stats, context_parallel_attention
from cp_testing import make_config, shard

B, H, D = 2, 4, 8
E = 4  # float32

# (ring, ulysses, rotate_method) for each world size; every mode that fits.
MODES = {
    2: [(1, 2, "allgather"), (2, 1, "allgather"), (2, 1, "alltoall")],
    4: [(1, 4, "allgather"), (4, 1, "allgather"), (4, 1, "alltoall"), (2, 2, "allgather"), (2, 2, "alltoall")],
}


def design_formula(ring: int, ulysses: int, length: int) -> Fraction:
    """docs/architecture.md's bytes per rank for one forward attention call (hidden d = heads × head_dim)."""
    bLde = B * length * H * D * E
    n = ring * ulysses
    return Fraction(4 * bLde * (ulysses - 1), n * ulysses) + Fraction(2 * bLde * (ring - 1), n)


def _pieces(length: int, parts: int) -> list[int]:
    return [len(p) for p in torch.arange(length).tensor_split(parts)]


def expected_bytes(ring: int, ulysses: int, rotate: str, length: int, rank: int, masked: bool) -> dict[str, int]:
    """Exact per-rank bytes sent, by payload, for the shard sizes of `tensor_split(length, ring * ulysses)`.

    Mesh ("ring", "ulysses"): rank = ring_index * ulysses + ulysses_index. Ulysses exchanges the rank's own
    shard with its group (q, k, v out; o comes back as the group's other shards); the ring then moves the
    ulysses group's gathered K/V (one head slice) between ring groups.
    """
    sizes = _pieces(length, ring * ulysses)
    ring_idx = rank // ulysses
    group_len = [sum(sizes[g * ulysses:(g + 1) * ulysses]) for g in range(ring)]  # K/V length in the ring
    heads = -(-H // ulysses)  # per-rank heads after Ulysses (padded up)
    row = B * heads * D * E
    data = mask = 0
    if ulysses > 1:
        own = sizes[rank]
        data += 3 * own * (ulysses - 1) * row + (group_len[ring_idx] - own) * row
        group_sizes = sizes[ring_idx * ulysses:(ring_idx + 1) * ulysses]
        mask += max(group_sizes) * (ulysses - 1) * B * 4 if masked else 0
    if ring > 1:
        if rotate == "alltoall":
            # Rank sends every ring block but the next rank's own (that one would come home).
            sent = sum(group_len) - group_len[(ring_idx + 1) % ring]
        else:
            sent = max(group_len) * (ring - 1)  # all-gather: the padded piece to each other rank
        data += 2 * sent * row
        mask += sent * B * 4 if masked else 0
    return {"attention": data, "mask": mask}


def expected_calls(ring: int, ulysses: int, rotate: str, masked: bool, anything: bool) -> dict[str, int]:
    calls: dict[str, int] = {}
    gathers = int(anything)  # one exchange of every rank's lengths, for the whole mesh
    if ulysses > 1:
        calls["all_to_all"] = 4
        gathers += masked  # bias gather
    if ring > 1:
        if rotate == "alltoall":
            calls["send_recv"] = ring - 1
        else:
            gathers += 2 + masked
    if gathers:
        calls["all_gather"] = gathers
    return calls


def count_one_call(world: int, length: int, masked: bool) -> list[dict]:
    """On every rank: one attention call per mode inside `comm_stats()`; returns the stats per mode."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, length, H, D) for _ in range(3))
    mask = torch.rand(B, length) > 0.3 if masked else None
    anything = length % world != 0
    records = []
    for ring, ulysses, rotate in MODES[world]:
        config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=anything and ulysses > 1,
                             ring_anything=anything and ring > 1)
        with comm_stats() as stats:
            context_parallel_attention(shard(q), shard(k), shard(v), None if mask is None else shard(mask),
                                       config=config)
        records.append(dict(mode=(ring, ulysses, rotate), rank=dist.get_rank(), anything=anything, **stats.as_dict()))
    return records


def outside_and_nested() -> tuple[int, int, int]:
    """Nothing is counted outside a block; nested blocks both count."""
    config = make_config(2, 1, rotate_method="alltoall")
    q = torch.randn(1, 8, 2, 4)
    with comm_stats() as outer:
        with comm_stats() as inner:
            context_parallel_attention(q, q, q, config=config)
        context_parallel_attention(q, q, q, config=config)
    with comm_stats() as after:
        pass
    context_parallel_attention(q, q, q, config=config)
    return outer.total_sent, inner.total_sent, after.total_sent


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("length", [64, 61], ids=["even", "uneven"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_bytes_match_design_formulas(pool, world, length, masked):
    per_rank = pool(world).run(count_one_call, world, length, masked)
    for i, (ring, ulysses, rotate) in enumerate(MODES[world]):
        records = [per_rank[r][i] for r in range(world)]
        for rec in records:
            where = f"ring={ring} ulysses={ulysses} {rotate} L={length} rank {rec['rank']}"
            expected = expected_bytes(ring, ulysses, rotate, length, rec["rank"], masked)
            sent = rec["payload_sent"]
            assert sent.get("attention", 0) == expected["attention"], where
            assert sent.get("mask", 0) == expected["mask"], where
            if length % world == 0:
                assert sent["attention"] == design_formula(ring, ulysses, length), where
                assert "sizes" not in sent, where
            else:
                # [q_len, kv_len] int64s to each other Ulysses rank, [kv_len] to each other ring rank.
                # A direct call has no plan splits to read the lengths from: one exchange of (q, kv) lengths.
                assert sent["sizes"] == 16 * (ring * ulysses - 1), where
            assert sum(rec["bytes_sent"].values()) == sum(sent.values()), where
            assert rec["calls"] == expected_calls(ring, ulysses, rotate, masked, rec["anything"]), where
        total = sum(rec["payload_sent"]["attention"] for rec in records)
        exact_total = design_formula(ring, ulysses, length) * world
        if ring == 1 or rotate == "alltoall":
            assert total == exact_total, (ring, ulysses, rotate, length)
        else:
            assert total >= exact_total, (ring, ulysses, rotate, length)  # all-gather padding
        # Every byte sent is received by someone: the group's totals agree.
        received = sum(sum(rec["bytes_received"].values()) for rec in records)
        assert received == sum(sum(rec["bytes_sent"].values()) for rec in records)


def test_counts_only_inside_the_block(pool):
    for outer, inner, after in pool(2).run(outside_and_nested):
        assert inner > 0 and outer == 2 * inner and after == 0

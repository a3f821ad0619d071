"""The shared-memory all-to-all (CPU ranks on one host) returns exactly what gloo's all_to_all_single does.

Every case compares bit for bit with `dist.all_to_all_single` on the same inputs, over the default group
and over the sub-groups of a 2 x 2 mesh: even and uneven splits, empty pieces, several dtypes and row
shapes, and buffers that grow and shrink between calls. Then the group-wide decisions: one rank that
cannot grow its buffer, or that sets CP_HOOKS_SHM=0, sends the whole group to gloo (no hang), and
`keep_gloo` switches a group back and forth. Dead and stuck peers are in tests/test_faults.py.

The lifetime of the buffer files: at 3 and 4 ranks, 50 calls whose buffers grow past several MiB and
shrink, with peers that receive nothing from a buffer just made; and a rank whose last all-to-all grew
its buffer and that exits at once (its exit hook) while its peers have not opened the file yet.
A platform without `os.sched_getaffinity` keeps gloo.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import warnings

import pytest
import torch
import torch.distributed as dist

from cp_hooks import comm
from cp_hooks.comm import shared_memory

# Linux on x86-64 with a /dev/shm: elsewhere every group keeps gloo, which the other test files cover.
needs_shared_memory = pytest.mark.skipif(
    bool([r for r in shared_memory.local_reasons_against() if shared_memory.ENV_SWITCH not in r]),
    reason=f"shared memory is not offered here: {shared_memory.local_reasons_against()}",
)


@contextlib.contextmanager
def switch(value: str):
    """CP_HOOKS_SHM=value in this rank while a group probes; the previous value afterwards."""
    before = os.environ.get(shared_memory.ENV_SWITCH)
    os.environ[shared_memory.ENV_SWITCH] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(shared_memory.ENV_SWITCH, None)
        else:
            os.environ[shared_memory.ENV_SWITCH] = before


def forced():
    """Shared memory even on a machine with fewer cores than ranks (and whatever the caller's environment)."""
    return switch("1")


def _gloo_reference(x, send_sizes, recv_sizes, group):
    out = x.new_empty((sum(recv_sizes),) + tuple(x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), recv_sizes, send_sizes, group=group)
    return out


def _cases(world: int, rank: int):
    """(x, send_sizes) per case; what a rank sends to rank j depends on both (uneven, sometimes empty)."""
    g = torch.Generator().manual_seed(rank)
    yield torch.randn(0, 3), [0] * world  # the group's very first call sends nothing: no buffer yet
    for dtype in (torch.float32, torch.bfloat16, torch.float64, torch.int64):
        rows = [2] * world
        yield torch.randn(sum(rows), 3, 4, generator=g).mul(100).to(dtype), rows
    for rows_to in ([(rank + j) % 3 for j in range(world)],  # uneven, with empty pieces
                    [0] * world,  # nothing at all
                    [rank == j for j in range(world)],  # only to itself
                    [4096 * (j + 1) for j in range(world)],  # grows the buffer past 1 MiB
                    [1] * world):  # and back to small
        rows_to = [int(r) for r in rows_to]
        yield torch.randn(sum(rows_to), 2, 64, generator=g), rows_to
    yield torch.randn(3 * world, 5, generator=g).t().contiguous().t(), [3] * world  # non-contiguous input


def _recv_sizes(send_sizes, group):
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, send_sizes, group=group)
    me = dist.get_rank(group)
    return [sizes[me] for sizes in everyone]


def matches_gloo_on(groups) -> list[str]:
    checked = []
    for group in groups:
        world, rank = group.size(), group.rank()
        for i, (x, send) in enumerate(_cases(world, dist.get_rank())):
            recv = _recv_sizes(send, group)
            got = comm.all_to_all(x, send, recv, group)
            want = _gloo_reference(x, send, recv, group)
            assert got.dtype == want.dtype and torch.equal(got, want), f"case {i} differs on group rank {rank}"
        views_match_packed(group)
        checked.append(shared_memory.describe(group))
    return checked


def views_match_packed(group) -> None:
    """`comm.all_to_all_views` with strided pieces (Ulysses' head chunks, uneven lengths, an empty shard) and a
    strided destination equals packing them contiguously and calling `all_to_all`."""
    world, rank = group.size(), group.rank()
    lengths = [(r + 1) % 3 * 2 for r in range(world)]  # uneven, rank 2 empty
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(2, lengths[rank], 2 * world, 8, generator=g)  # (B, S_local, H, D)
    chunks = x.reshape(2, lengths[rank], world, 2, 8).permute(2, 1, 0, 3, 4)  # (N, S_local, B, H/N, D), strided
    want = comm.all_to_all(chunks.reshape(-1, 2, 2, 8), [lengths[rank]] * world, lengths, group)
    out = torch.full((2, sum(lengths), 2, 8), float("nan")).permute(1, 0, 2, 3)  # a strided destination
    assert comm.all_to_all_views(chunks.unbind(0), out, lengths, group)
    assert torch.equal(out, want), f"views differ on group rank {rank}"


def check_fresh_and_mesh_groups() -> list[str]:
    """A fresh group of every rank, and at 4 ranks the ring and Ulysses groups of a 2 x 2 mesh.

    CP_HOOKS_SHM=1: with more ranks than cores (4 ranks on a 2-core machine) the groups would keep gloo.
    """
    with forced():
        world = dist.get_world_size()
        groups = [dist.new_group(list(range(world)))]  # its first call is the empty case
        if world == 4:
            rows, _ = dist.new_subgroups_by_enumeration([[0, 1], [2, 3]])  # a mesh's Ulysses groups
            columns, _ = dist.new_subgroups_by_enumeration([[0, 2], [1, 3]])  # and its ring groups
            groups += [rows, columns]
        return matches_gloo_on(groups)


@needs_shared_memory
@pytest.mark.parametrize("world", [2, 4])
def test_matches_gloo_bit_for_bit(pool, world):
    for described in pool(world).run(check_fresh_and_mesh_groups):
        assert all(d == "shared memory" for d in described), described


def data_files_are_unlinked() -> tuple[int, int]:
    group = dist.new_group(list(range(dist.get_world_size())))
    x = torch.ones(4 * group.size(), 8)
    sizes = [4] * group.size()
    with forced():
        comm.all_to_all(x, sizes, sizes, group)
    # Only the rows for the peers go through the buffer: 4 rows of 8 float32 for each of them.
    assert shared_memory.largest_send_bytes(group, reset=True) == (group.size() - 1) * 4 * 8 * 4
    assert shared_memory.largest_send_bytes(group) == 0
    assert shared_memory.shared_bytes(group) == 1 << 20  # the buffer: whole MiB
    transport = shared_memory.transport_for(group, x)
    after_first = len(glob.glob(transport.base + "*"))
    comm.all_to_all(x, sizes, sizes, group)  # every peer has mapped the files: their names are gone
    dist.barrier()
    return after_first, len(glob.glob(transport.base + "*"))


@needs_shared_memory
def test_no_file_outlives_its_first_use(pool):
    for after_first, after_second in pool(2).run(data_files_are_unlinked):
        assert after_first >= 1 and after_second == 0


def one_rank_cannot_grow() -> tuple[str, bool]:
    """Rank 1's /dev/shm is 'full' when its buffer must grow: every rank goes back to gloo, results exact."""
    group = dist.new_group(list(range(dist.get_world_size())))
    small = torch.arange(4.0 * group.size()).view(-1, 1) + 100 * dist.get_rank()
    sizes = [4] * group.size()
    with forced():
        first = comm.all_to_all(small, sizes, sizes, group)  # a 1 MiB buffer each: shared memory
    assert torch.equal(first, _gloo_reference(small, sizes, sizes, group))
    original = shared_memory._map

    def full(path, size=None):
        if size is not None and dist.get_rank() == 1:
            raise OSError(28, "No space left on device")
        return original(path, size)

    shared_memory._map = full
    try:
        big = torch.randn(group.size() * 2**18, 2)  # 2 MiB: needs a bigger buffer
        rows = [2**18] * group.size()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = comm.all_to_all(big, rows, rows, group)
        assert any("goes back to gloo" in str(w.message) for w in caught) == (dist.get_rank() == 1)
        assert torch.equal(got, _gloo_reference(big, rows, rows, group))
        again = comm.all_to_all(small, sizes, sizes, group)
        assert torch.equal(again, first)
    finally:
        shared_memory._map = original
    return shared_memory.describe(group), first is not None


@needs_shared_memory
def test_a_rank_that_cannot_grow_sends_the_group_to_gloo(pool):
    for described, _ in pool(2).run(one_rank_cannot_grow):
        assert described == "gloo (rank 1 of the group could not grow its shared-memory buffer)"


def one_rank_opts_out() -> str:
    """CP_HOOKS_SHM=0 on rank 1 only: the probe (at the first all-to-all) keeps the whole group on gloo."""
    with switch("0" if dist.get_rank() == 1 else "auto"):
        group = dist.new_group(list(range(dist.get_world_size())))
        x = torch.randn(2 * group.size(), 3)
        sizes = [2] * group.size()
        assert torch.equal(comm.all_to_all(x, sizes, sizes, group), _gloo_reference(x, sizes, sizes, group))
        return shared_memory.describe(group)


@needs_shared_memory
def test_one_rank_opting_out_keeps_the_group_on_gloo(pool):
    for described in pool(2).run(one_rank_opts_out):
        assert described == "gloo (rank 1: CP_HOOKS_SHM=0)"


def switch_transports() -> list[str]:
    group = dist.new_group(list(range(dist.get_world_size())))
    x = torch.randn(3 * group.size(), 7) + dist.get_rank()
    sizes = [3] * group.size()
    want = _gloo_reference(x, sizes, sizes, group)
    seen = []
    with forced():
        comm.all_to_all(x, sizes, sizes, group)  # the probe
    for keep in (False, True, False, True, False):
        shared_memory.keep_gloo(group, keep)
        assert torch.equal(comm.all_to_all(x, sizes, sizes, group), want)
        seen.append(shared_memory.describe(group))
    return seen


@needs_shared_memory
def test_keep_gloo_switches_a_group_between_transports(pool):
    for seen in pool(2).run(switch_transports):
        assert seen == ["shared memory", "gloo (keep_gloo)"] * 2 + ["shared memory"]


def decide_with_one_core(force: bool) -> tuple[str, int | None]:
    """Every rank's CPU affinity is core 0: more ranks than cores."""
    original = os.sched_getaffinity
    os.sched_getaffinity = lambda pid: {0}
    try:
        with switch("1" if force else "auto"):
            group = dist.new_group(list(range(dist.get_world_size())))
            x = torch.randn(2 * group.size(), 3) + dist.get_rank()
            sizes = [2] * group.size()
            for _ in range(3):
                assert torch.equal(comm.all_to_all(x, sizes, sizes, group), _gloo_reference(x, sizes, sizes, group))
        transport = shared_memory.transport_for(group, x)
        return shared_memory.describe(group), None if transport is None else transport._spin
    finally:
        os.sched_getaffinity = original


@needs_shared_memory
def test_more_ranks_than_cores_keeps_gloo_unless_forced(pool):
    for described, _ in pool(2).run(decide_with_one_core, False):
        assert described == "gloo (more ranks (2) than cores (1); CP_HOOKS_SHM=1 to use shared memory anyway)"
    for described, spin in pool(2).run(decide_with_one_core, True):
        assert described == "shared memory" and spin == 0  # forced: it sleeps between polls instead of spinning


def test_only_x86_linux_is_offered(monkeypatch):
    monkeypatch.setattr(shared_memory.platform, "machine", lambda: "aarch64")
    assert any("x86-64 only" in r for r in shared_memory.local_reasons_against())


def _schedule_rows(call: int, rank: int, world: int) -> list[int]:
    """Rows rank `rank` sends to each rank at call `call` of `many_calls_with_empty_shards`.

    The scale grows for 30 calls (each rank's buffer crosses several MiB boundaries: new generations), then
    shrinks and spikes once more. A rotating third of the pairs is empty, and at every third call one rank
    sends nothing at all: a peer often receives 0 rows from a buffer that was just created.
    """
    scale = 160 * call if call < 30 else 160 * (50 - call) if call != 42 else 6000
    rows = [scale * ((call + rank + 2 * j) % 3) for j in range(world)]
    if call % 3 == 0 and rank == (call // 3) % world:
        rows = [0] * world
    return rows


def many_calls_with_empty_shards(calls: int = 50) -> list[int]:
    """50 all-to-alls with growing, shrinking and empty pieces: each equal to gloo's, bit for bit."""
    with forced():
        group = dist.new_group(list(range(dist.get_world_size())))
        world, rank = group.size(), group.rank()
        gens = []
        g = torch.Generator().manual_seed(rank)
        for call in range(calls):
            send = _schedule_rows(call, rank, world)
            recv = [_schedule_rows(call, r, world)[rank] for r in range(world)]
            x = torch.randn(sum(send), 2, 32, generator=g)  # 256-byte rows: 4096 rows a MiB
            got = comm.all_to_all(x, send, recv, group)
            assert torch.equal(got, _gloo_reference(x, send, recv, group)), f"call {call} differs on rank {rank}"
            gens.append(shared_memory.transport_for(group, x)._gen)
        assert shared_memory.describe(group) == "shared memory"
        return gens


@needs_shared_memory
@pytest.mark.parametrize("world", [3, 4])
def test_empty_shards_and_growing_buffers_match_gloo(pool, world):
    for gens in pool(world).run(many_calls_with_empty_shards):
        assert gens[-1] >= 4  # the buffers did grow, several times


def owner_exits_right_after_growing(slow_s: float = 1.0) -> bool:
    """The group's last all-to-all grows rank 0's buffer; rank 0 then runs the exit hook at once, while
    its peers sleep before they open the new file. They must still read the right rows, also rank 2, which
    receives nothing from rank 0 in that call (it maps the file anyway: its acknowledgement says so)."""
    with forced():
        group = dist.new_group(list(range(dist.get_world_size())))
        world, rank = group.size(), group.rank()
        small = [1] * world
        x = torch.randn(world, 8)
        comm.all_to_all(x, small, small, group)  # every rank's first buffer (1 MiB), mapped by every peer
        comm.all_to_all(x, small, small, group)  # and its name gone
        transport = shared_memory.transport_for(group, x)

        def rows(src, dst):  # rank 0 sends 2**17 rows of 32 bytes (4 MiB) to ranks 0 and 1, none to rank 2
            return (2**17 if dst < 2 else 0) if src == 0 else 1

        big, recv = [rows(rank, j) for j in range(world)], [rows(r, rank) for r in range(world)]
        x = torch.randn(sum(big), 8)
        original = shared_memory._map

        def slow_open(path, size=None):
            if size is None:
                time.sleep(slow_s)  # rank 0 has returned from the call and runs its exit hook meanwhile
            return original(path, size)

        if rank != 0:
            shared_memory._map = slow_open
        try:
            got = comm.all_to_all(x, big, recv, group)
        finally:
            shared_memory._map = original
        if rank == 0:
            assert transport._gen == 2
            shared_memory._remove_named_files()  # what atexit does when this was the process's last collective
            assert not glob.glob(f"{transport.base}-r0-*")
        assert torch.equal(got, _gloo_reference(x, big, recv, group))
        return True


@needs_shared_memory
@pytest.mark.parametrize("world", [2, 3])
def test_exit_right_after_growing_waits_for_the_peers(pool, world):
    assert all(pool(world).run(owner_exits_right_after_growing))


def decide_without_affinity() -> str:
    """No os.sched_getaffinity (macOS, Windows): the probe keeps gloo, even with CP_HOOKS_SHM=1."""
    original = os.sched_getaffinity
    del os.sched_getaffinity
    try:
        with forced():
            group = dist.new_group(list(range(dist.get_world_size())))
            x = torch.randn(2 * group.size(), 3) + dist.get_rank()
            sizes = [2] * group.size()
            assert torch.equal(comm.all_to_all(x, sizes, sizes, group), _gloo_reference(x, sizes, sizes, group))
        return shared_memory.describe(group)
    finally:
        os.sched_getaffinity = original


@needs_shared_memory
def test_no_cpu_affinity_keeps_gloo(pool):
    why = "no os.sched_getaffinity on this platform (cannot count the cores)"
    for described in pool(2).run(decide_without_affinity):
        assert described == f"gloo (rank 0: {why}; rank 1: {why})"


def test_no_cpu_affinity_is_a_reason_against(monkeypatch):
    monkeypatch.delattr(shared_memory.os, "sched_getaffinity")
    assert "no os.sched_getaffinity on this platform (cannot count the cores)" in shared_memory.local_reasons_against()

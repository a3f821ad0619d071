"""All-to-all through shared memory for CPU ranks on one host, in place of gloo's loopback TCP.

gloo moves an all-to-all between processes on one machine over TCP: each call hands the work to a
worker thread, the kernel copies the bytes through socket buffers, and completion wakes the caller
again. On a few shared cores that costs about as much as the transfer itself, and it is paid four
times per Ulysses attention call. Here every rank instead writes its send buffer once into a file in
/dev/shm that the others have mapped, publishes a counter, and copies its rows out of the others'
files. Waiting is a spin on the peers' counters (yielding the core), with the group's timeout and a
check that each peer process is still alive, so a dead or stuck rank raises instead of hanging.

Protocol of call n (every rank of the group, in the same order, like any collective):
  1. wait until every peer's `done` >= n - 1: nobody still reads this rank's previous data;
  2. write the rows addressed to the peers and the per-destination sizes into its own file (its own rows go
     straight to its output), then `seq` = n (published last:
     x86's stores become visible in program order, so a peer that sees n also sees the data);
  3. wait until every peer's `seq` >= n, map each peer's file if it has a new generation (even when that peer
     sends this rank nothing), copy the rows addressed to this rank out of each peer's file;
  4. `done` = n.
One data buffer per rank is enough: step 1 guarantees that it is free before it is overwritten.

A buffer that must grow is a new file (the next generation, published with the data in step 2). Its name
is needed until every peer has opened it, and no longer: a peer's `done` >= n says that it has mapped every
generation published up to call n, so the owner unlinks the file at its next call, after step 1. A rank
whose last all-to-all published a new file waits at exit, up to the group's timeout, for every live peer to
acknowledge that call before it unlinks the name (a peer still in step 3 would otherwise find no file).

A rank that cannot grow its buffer (a full /dev/shm) publishes "fall back" instead of data; every rank
sees it in step 3, and the whole group does that call — and every later one — with gloo.

Used only when every rank of the group agrees at the first all-to-all on that group (a collective
probe): Linux on x86-64, tensors on CPU, a gloo group, the same /dev/shm and PID namespace on every
rank, at least as many cores (the union of the ranks' CPU affinities, which every rank must be able to
read: not on macOS or Windows) as ranks, and `CP_HOOKS_SHM` not set to 0 on any rank. Anything else keeps
gloo. `CP_HOOKS_SHM=1` on any rank lifts the core condition.
"""

from __future__ import annotations

import atexit
import datetime
import mmap
import os
import platform
import secrets
import sys
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

SHM_DIR = "/dev/shm"
ENV_SWITCH = "CP_HOOKS_SHM"  # "0" on any rank: gloo; "1" on any rank: shared memory even on too few cores
# int64 indices into a rank's header: the two counters peers spin on sit on cache lines of their own.
_SEQ, _DONE, _GEN, _STATUS, _SIZES = 0, 8, 16, 17, 18  # _SIZES: bytes this rank sends to each rank
_TOKEN_BYTES = 64  # after the headers: the probe's token, proving that every rank maps the same file
_DATA_GRANULE = 1 << 20  # data buffers grow in whole MiB
_SPIN = 2000  # polls before yielding the core: most waits end within a few microseconds
_NAP_S = 2e-5  # ranks outnumber cores: sleep between polls from the start
_LIVENESS_EVERY_S = 0.1
_DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for gloo groups

_TRANSPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # group -> transport, or None: gloo
_WHY_NOT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # group -> reasons it keeps gloo
_KEPT_ON_GLOO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # groups pinned by keep_gloo()
# Transports whose newest data file is still named (a peer may not have mapped it yet), held here until it is
# unlinked (at their next call, or at exit). They hold no reference to their group.
_PENDING: set[SharedMemoryAllToAll] = set()


def transport_for(group, x: torch.Tensor) -> SharedMemoryAllToAll | None:
    """The group's shared-memory transport, probing (collectively) at the group's first CPU all-to-all.

    Returns None when the group keeps gloo. Must be called by every rank of the group at the same
    collective, as all-to-all is: the first call is itself a collective.
    """
    if x.device.type != "cpu":
        return None
    group = group if group is not None else dist.group.WORLD
    if group in _KEPT_ON_GLOO:
        return None
    try:
        return _TRANSPORTS[group]
    except KeyError:
        pass
    transport, reasons = None, ["not a gloo group of several ranks"]
    if group.size() > 1 and "gloo" in str(dist.get_backend(group)).lower():
        transport, reasons = SharedMemoryAllToAll.probe(group)
    _TRANSPORTS[group], _WHY_NOT[group] = transport, reasons
    return transport


def keep_gloo(group=None, keep: bool = True) -> None:
    """Send the group's all-to-alls through gloo (`keep=True`) even where shared memory works, or stop doing so.

    For comparing the two transports in one run. Call it on every rank of the group between two
    all-to-alls: ranks that disagree about the transport wait for each other until the timeout.
    `CP_HOOKS_SHM=0` keeps every group on gloo from the start.
    """
    group = group if group is not None else dist.group.WORLD
    if keep:
        _KEPT_ON_GLOO[group] = True
    else:
        _KEPT_ON_GLOO.pop(group, None)


def shared_bytes(group=None) -> int:
    """Bytes of /dev/shm this rank's buffer for the group holds (0 when the group uses gloo). No collective."""
    transport = _TRANSPORTS.get(group if group is not None else dist.group.WORLD)
    return transport.shared_bytes if transport is not None else 0


def largest_send_bytes(group=None, *, reset: bool = False) -> int:
    """The most bytes this rank has put in the group's shared buffer in one all-to-all (since the last reset).

    What a workload needs of the buffer (which keeps the largest size it ever had). No collective.
    """
    transport = _TRANSPORTS.get(group if group is not None else dist.group.WORLD)
    if transport is None:
        return 0
    value = transport.largest_send
    if reset:
        transport.largest_send = 0
    return value


def describe(group=None) -> str:
    """How the group's CPU all-to-alls travel: "shared memory", "gloo (reasons)", or "not decided yet"."""
    group = group if group is not None else dist.group.WORLD
    if group in _KEPT_ON_GLOO:
        return "gloo (keep_gloo)"
    if group not in _TRANSPORTS:
        return "not decided yet (decided at the group's first CPU all-to-all)"
    transport = _TRANSPORTS[group]
    if transport is not None and transport.disabled_reason is None:
        return "shared memory"
    why = transport.disabled_reason if transport is not None else "; ".join(_WHY_NOT[group])
    return f"gloo ({why})"


def local_reasons_against() -> list[str]:
    """Why this process cannot use the shared-memory transport (empty when it can)."""
    reasons = []
    if _switch() == "off":
        reasons.append(f"{ENV_SWITCH}=0")
    if sys.platform != "linux":
        reasons.append(f"platform {sys.platform} (Linux only)")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        # The publish-by-counter protocol relies on x86's store ordering; other CPUs would need fences.
        reasons.append(f"CPU {platform.machine()} (x86-64 only)")
    if not os.path.isdir(SHM_DIR):
        reasons.append(f"no {SHM_DIR}")
    why = _cores()[1]
    if why is not None:
        reasons.append(why)
    return reasons


def _cores() -> tuple[list[int], str | None]:
    """The cores this process may run on, or ([], why not) where they cannot be read."""
    getaffinity = getattr(os, "sched_getaffinity", None)  # absent on macOS and Windows
    if getaffinity is None:
        return [], "no os.sched_getaffinity on this platform (cannot count the cores)"
    try:
        return sorted(getaffinity(0)), None
    except OSError as e:
        return [], f"cannot read the CPU affinity ({e})"


def _switch() -> str:
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    return "off" if value in ("0", "false", "no", "off") else "on" if value in ("1", "true", "yes", "on") else "auto"


def _group_timeout(group) -> datetime.timedelta:
    try:
        return group._get_backend(torch.device("cpu")).options._timeout
    except Exception:  # private API: fall back to torch's documented default
        return _DEFAULT_TIMEOUT


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _map(path: str, size: int | None = None) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if size is not None else 0), 0o600)
    try:
        if size is not None:
            os.posix_fallocate(fd, 0, size)  # reserve now: a full /dev/shm fails here, not as SIGBUS later
        return mmap.mmap(fd, size if size is not None else os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _typed(raw: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The bytes `raw` (uint8, at an offset that is a multiple of the element size) as a contiguous `like`."""
    return raw.view(like.dtype).view(like.shape)


def _header_ints(world: int) -> int:
    """int64s per rank header: the fixed fields and one size per rank, in whole 64-byte lines."""
    return -(-(_SIZES + world) // 8) * 8


def _control_bytes(world: int) -> int:
    return _header_ints(world) * 8 * world + _TOKEN_BYTES


class SharedMemoryAllToAll:
    """One process group's all-to-all through /dev/shm. Built by `probe` (collective), not directly."""

    def __init__(self, group, base: str, control: mmap.mmap, pids: list[int], *, crowded: bool = False) -> None:
        self.rank, self.world = group.rank(), group.size()
        self.base = base
        self.pids = pids
        self.timeout_s = _group_timeout(group).total_seconds()
        self.disabled_reason: str | None = None  # set when the group fell back to gloo
        self._peers = [(self.rank + i) % self.world for i in range(1, self.world)]
        self._control = control
        ints, per_rank = memoryview(control).cast("q"), _header_ints(self.world)
        self._headers = [ints[r * per_rank : (r + 1) * per_rank] for r in range(self.world)]
        self._calls = 0
        self._gen = 0  # generation of this rank's data file (0: none yet)
        self._capacity = 0
        self._data: torch.Tensor | None = None  # this rank's data buffer, uint8
        self._data_map: mmap.mmap | None = None
        self._named: str | None = None  # own data file, until every peer has opened it
        self._named_at = 0  # the call that published it: a peer's `done` >= this says that it has mapped it
        self._peer_gen = [0] * self.world
        self._peer_maps: list[mmap.mmap | None] = [None] * self.world
        self._peer_data: list[torch.Tensor | None] = [None] * self.world
        self.largest_send = 0  # bytes: the most this rank has put in its buffer in one call (resettable)
        # More ranks than cores (only with CP_HOOKS_SHM=1): a spinning rank would hold the core that the rank
        # it waits for needs, so it sleeps between polls instead.
        self._spin = 0 if crowded else _SPIN

    # ------------------------------------------------------------------ set-up
    @classmethod
    def probe(cls, group) -> tuple[SharedMemoryAllToAll | None, list[str]]:
        """Collective: whether every rank can share /dev/shm with the group's first rank.

        Group rank 0 creates a control file named with a random token; every rank maps it and checks the
        token, and the answers are all-gathered, so every rank reaches the same decision. Never raises
        locally: an exception on one rank would leave the others waiting in the all-gather.

        Returns:
            (transport, []) or (None, the reasons of every rank that cannot).
        """
        rank, world = group.rank(), group.size()
        reasons = local_reasons_against()
        offer: list[tuple[str, bytes, str] | None] = [None]  # (base path, token, PID namespace) from rank 0
        control: mmap.mmap | None = None
        if rank == 0 and not reasons:
            token = secrets.token_hex(8).encode()
            base = os.path.join(SHM_DIR, f"cp_hooks-{os.getpid()}-{token.decode()}")
            try:
                control = _map(base + "-control", _control_bytes(world))  # zero-filled: every counter starts at 0
                control[-_TOKEN_BYTES : -_TOKEN_BYTES + len(token)] = token
                offer = [(base, token, _pid_namespace())]
            except OSError as e:
                reasons.append(f"cannot create a file in {SHM_DIR}: {e}")
        dist.broadcast_object_list(offer, src=dist.get_global_rank(group, 0), group=group)
        if offer[0] is not None and rank != 0 and not reasons:
            base, token, namespace = offer[0]
            if namespace != _pid_namespace():
                reasons.append("a PID namespace other than the group's first rank's")  # its PIDs mean nothing here
            else:
                try:
                    control = _map(base + "-control")
                    if bytes(control[-_TOKEN_BYTES : -_TOKEN_BYTES + len(token)]) != token:
                        reasons.append(f"a {SHM_DIR} other than the group's first rank's")
                except OSError as e:
                    reasons.append(f"cannot open the group's control file: {e}")
        answers: list[Any] = [None] * world
        mine = dict(reasons=reasons, pid=os.getpid(), cores=_cores()[0], switch=_switch())
        dist.all_gather_object(answers, mine, group=group)
        if rank == 0 and offer[0] is not None:
            _unlink(offer[0][0] + "-control")  # every rank has mapped it (or failed to): the name can go
        everyone = [f"rank {r}: {why}" for r, a in enumerate(answers) for why in a["reasons"]]
        # Waiting ranks poll, which pays while each rank has a core of its own. With more ranks than cores a
        # polling rank takes the core that the rank it waits for needs, and gloo's blocking waits are faster.
        cores = set().union(*(a["cores"] for a in answers))
        crowded = len(cores) < world
        if crowded and not everyone and not any(a["switch"] == "on" for a in answers):
            everyone.append(
                f"more ranks ({world}) than cores ({len(cores)}); {ENV_SWITCH}=1 to use shared memory anyway"
            )
        if offer[0] is None and not everyone:
            everyone = ["the group's first rank offered no control file"]
        if everyone:
            if control is not None:
                control.close()
            return None, everyone
        # No rank gave a reason, so rank 0 offered a control file and every rank mapped it.
        assert offer[0] is not None and control is not None
        return cls(group, offer[0][0], control, [a["pid"] for a in answers], crowded=crowded), []

    # ------------------------------------------------------------------ the collective
    def all_to_all(self, x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int]) -> torch.Tensor | None:
        """Rows `x.split(send_sizes)[j]` (dim 0) to rank j; the received rows in rank order, or None: use gloo.

        Args:
            x: CPU tensor.
            send_sizes / recv_sizes: rows to / from each rank of the group.

        Returns None when a rank of the group could not take part in this call (its buffer could not
        grow); the whole group then does this and every later call with gloo.

        Raises:
            RuntimeError: a peer exited or did not arrive within the group's timeout, or the ranks'
                split sizes disagree.
        """
        out = x.new_empty((sum(recv_sizes),) + tuple(x.shape[1:]))
        return out if self.exchange(x.split_with_sizes(send_sizes), out.split_with_sizes(recv_sizes)) else None

    def exchange(self, sources: Sequence[torch.Tensor], dests: Sequence[torch.Tensor]) -> bool:
        """Copy `sources[j]` to rank j, and rank j's piece for this rank into `dests[j]`; False: use gloo.

        The pieces may have any strides (a permuted view: the copy into or out of the shared buffer is then
        the layout change, with no copy of its own). What rank i sends rank j has the shape of rank j's
        `dests[i]` up to leading 1s, and goes through the buffer in that shape's contiguous order.

        Returns False (nothing written into `dests`) when a rank of the group could not take part in this
        call; the whole group then does this and every later call with gloo. Raises as `all_to_all`.
        """
        if self.disabled_reason is not None:
            return False
        self._calls += 1
        n = self._calls
        me = self._headers[self.rank]
        send_bytes = [t.numel() * t.element_size() for t in sources]
        # Only the pieces the peers read go into the shared buffer, in rank order: a rank's own piece goes
        # straight from its source to its destination (and the buffer is (N-1)/N of a shard, not a whole one).
        peers = [j for j in range(self.world) if j != self.rank and send_bytes[j]]
        shared = sum(send_bytes[j] for j in peers)
        self.largest_send = max(self.largest_send, shared)
        for peer in self._peers:
            self._wait(peer, _DONE, n - 1, "finish reading the previous all-to-all")
        if self._named is not None:  # published at call n - 1 at the latest: every peer has mapped it
            self._release_name()
        ok = self._ensure_capacity(shared)
        if ok:
            at = 0
            for j in peers:
                assert self._data is not None  # bytes for a peer: _ensure_capacity mapped the buffer
                _typed(self._data[at : at + send_bytes[j]], sources[j]).copy_(sources[j])
                at += send_bytes[j]
            for j, nbytes in enumerate(send_bytes):
                me[_SIZES + j] = nbytes
            me[_GEN] = self._gen
        me[_STATUS] = 0 if ok else 1
        me[_SEQ] = n  # publish last: after this store a peer may read everything above
        try:
            return self._receive(n, sources, dests)
        finally:
            # Also when this rank raises: it reads nothing more of this call, and a peer waiting for it (at its
            # next call, or at exit to unlink a file) must not wait for an acknowledgement that never comes.
            me[_DONE] = n

    def _receive(self, n: int, sources: Sequence[torch.Tensor], dests: Sequence[torch.Tensor]) -> bool:
        """Step 3 of call n: wait for the peers' data, map their new files, copy this rank's pieces out."""
        for peer in self._peers:
            self._wait(peer, _SEQ, n, "send its part of the all-to-all")
        failed = [p for p in range(self.world) if self._headers[p][_STATUS] != 0]
        if failed:
            self.disabled_reason = f"rank {failed[0]} of the group could not grow its shared-memory buffer"
            if self._named is not None:  # made at this call, for a group that reads no shared buffer again
                self._release_name()
            return False
        # Map every new generation, also of a peer that sends this rank nothing now: `done` = n tells the
        # owner that its file's name is no longer needed, and a later call may read it.
        for peer in self._peers:
            gen = self._headers[peer][_GEN]
            if gen != self._peer_gen[peer]:
                self._map_peer(peer, gen)
        for peer in range(self.world):
            dest = dests[peer]
            length = dest.numel() * dest.element_size()
            if length == 0:
                continue
            if peer == self.rank:
                dest.copy_(sources[self.rank].reshape(dest.shape))
                continue
            header = self._headers[peer]
            if header[_SIZES + self.rank] != length:
                raise RuntimeError(
                    f"all-to-all size mismatch: rank {peer} of the group sends {header[_SIZES + self.rank]} bytes to "
                    f"rank {self.rank}, which expects {length}. Every rank must pass the same split sizes."
                )
            # The peer's buffer holds its pieces for the ranks other than itself, in rank order.
            src = sum(header[_SIZES + j] for j in range(self.rank) if j != peer)
            peer_data = self._peer_data[peer]
            assert peer_data is not None  # the peer sends bytes, so it published a file, mapped above
            dest.copy_(_typed(peer_data[src : src + length], dest))
        return True

    # ------------------------------------------------------------------ buffers
    def _ensure_capacity(self, nbytes: int) -> bool:
        if nbytes <= self._capacity:
            return True
        capacity = -(-nbytes // _DATA_GRANULE) * _DATA_GRANULE
        path = f"{self.base}-r{self.rank}-g{self._gen + 1}"
        try:
            new_map = _map(path, capacity)
        except OSError as e:
            _unlink(path)
            warnings.warn(
                f"cp_hooks: cannot grow the shared-memory all-to-all buffer to {capacity} bytes ({e}); "
                "this group goes back to gloo. Give /dev/shm more room (Docker: --shm-size) to keep it.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        self._data = None  # drop the tensor view before closing the map under it
        if self._data_map is not None:
            self._data_map.close()
        self._data_map, self._capacity, self._gen = new_map, capacity, self._gen + 1
        # Step 1 of this call released the previous name, so this is the only one.
        self._named, self._named_at = path, self._calls
        _PENDING.add(self)
        self._data = torch.frombuffer(new_map, dtype=torch.uint8)
        return True

    def _release_name(self) -> None:
        """Unlink this rank's data file (the mappings keep the memory until they are closed)."""
        assert self._named is not None  # called only while a file is named (those in _PENDING)
        _unlink(self._named)
        self._named = None
        _PENDING.discard(self)

    def _release_name_at_exit(self) -> None:
        """Unlink the newest data file once every peer has mapped it, has exited, or the timeout has passed.

        The owner may return from the call that published the file before a peer has opened it: when that
        was its last collective, a peer still copying out of the call needs the name. Every peer has
        published that call's `seq` (the owner saw it), so it only has its step 3 left: this wait is short
        unless the peer is stopped.
        """
        deadline = time.monotonic() + self.timeout_s
        try:
            for peer in self._peers:
                header = self._headers[peer]
                while header[_DONE] < self._named_at and time.monotonic() < deadline and _alive(self.pids[peer]):
                    time.sleep(1e-3)
        finally:
            self._release_name()  # whatever happened: no file outlives the process

    def _map_peer(self, peer: int, gen: int) -> None:
        self._peer_data[peer] = None  # drop the tensor view before closing the map under it
        old_map = self._peer_maps[peer]
        if old_map is not None:
            old_map.close()
            self._peer_maps[peer] = None
        self._peer_maps[peer] = _map(f"{self.base}-r{peer}-g{gen}")
        self._peer_data[peer] = torch.frombuffer(self._peer_maps[peer], dtype=torch.uint8)
        self._peer_gen[peer] = gen

    @property
    def shared_bytes(self) -> int:
        """Bytes of /dev/shm this rank's data buffer holds (one buffer, sized to its largest send)."""
        return self._capacity

    # ------------------------------------------------------------------ waiting
    def _wait(self, peer: int, field: int, target: int, what: str) -> None:
        """Spin until the peer's counter reaches `target`; raise on timeout or when the peer has died."""
        header = self._headers[peer]
        if header[field] >= target:
            return
        polls = 0
        start = last_check = time.monotonic()
        while header[field] < target:
            polls += 1
            if polls < self._spin:
                continue  # most waits end here, within microseconds
            if self._spin and polls % 64:
                os.sched_yield()
                continue
            now = time.monotonic()
            if now - last_check >= _LIVENESS_EVERY_S:
                last_check = now
                if not _alive(self.pids[peer]):
                    raise RuntimeError(
                        f"cp_hooks shared-memory all-to-all: rank {peer} of the group (pid {self.pids[peer]}) exited "
                        f"while this rank waited for it to {what}."
                    )
            if now - start > self.timeout_s:
                raise RuntimeError(
                    f"cp_hooks shared-memory all-to-all: rank {peer} of the group did not {what} within the process "
                    f"group's timeout ({self.timeout_s:.0f} s)."
                )
            if not self._spin:
                time.sleep(_NAP_S)  # ranks outnumber cores: a yield would not give the peer this core
            elif now - start > 0.01:
                time.sleep(1e-4)  # a long wait (a slow or stuck peer): stop burning the core


def _alive(pid: int) -> bool:
    """False when the process has exited (a zombie counts as exited: its parent may not have reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@atexit.register
def _remove_named_files() -> None:
    # A data file is named only until every peer has mapped it; one that is still named at exit (the job
    # ended, or failed, right after the file was made) goes with the process, once the peers have it.
    for transport in list(_PENDING):
        transport._release_name_at_exit()

"""Run a test function in N gloo processes on this machine (or N nccl processes, one GPU each).

A pool of N worker processes is started once per world size (loopback rendezvous on a free port) and
reused by every test: spawning costs seconds, a task costs milliseconds. `pool.run(fn, *args)` runs the
module-level function `fn(*args)` on every rank and returns the per-rank results, or raises with every
failing rank's traceback. A task that does not finish within its timeout kills the pool (a hang fails the
test instead of blocking CI); the next task starts a fresh pool.
"""

from __future__ import annotations

import datetime
import os
import queue
import socket
import traceback

import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 180.0
FAILURE_GRACE_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tasks, results, pg_timeout_s: float, backend: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    device_id = None
    if backend == "nccl":
        device_id = torch.device("cuda", rank)
        torch.cuda.set_device(device_id)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=pg_timeout_s),
                            device_id=device_id)
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args, kwargs = task
        try:
            results.put((rank, True, fn(*args, **kwargs)))
        except BaseException:  # report everything, including assertion errors, to the parent
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class DistributedPool:
    """N persistent ranks (gloo, or nccl with one GPU each) that run module-level functions on request."""

    def __init__(self, world: int, pg_timeout_s: float = 60.0, backend: str = "gloo") -> None:
        self.world = world
        self.backend = backend
        self.pg_timeout_s = pg_timeout_s
        self._procs = []

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        port = _free_port()
        self._tasks = [ctx.Queue() for _ in range(self.world)]
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(target=_worker, args=(r, self.world, port, self._tasks[r], self._results, self.pg_timeout_s,
                                                self.backend),
                        daemon=True)
            for r in range(self.world)
        ]
        for p in self._procs:
            p.start()

    def run(self, fn, *args, timeout: float = DEFAULT_TIMEOUT_S, **kwargs) -> list:
        """Run `fn(*args, **kwargs)` on every rank; return [result of rank 0, ..., rank N-1]."""
        if not self._procs or not all(p.is_alive() for p in self._procs):
            self.close()
            self._start()
        for q in self._tasks:
            q.put((fn, args, kwargs))
        outcomes = {}
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        while len(outcomes) < self.world:
            if any(not ok for ok, _ in outcomes.values()):
                # A rank failed: the others may be blocked in a collective it will never join. Give them a
                # short grace to report their own errors, then tear the pool down.
                deadline = min(deadline, datetime.datetime.now() + datetime.timedelta(seconds=FAILURE_GRACE_S))
            remaining = (deadline - datetime.datetime.now()).total_seconds()
            try:
                rank, ok, value = self._results.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                missing = sorted(set(range(self.world)) - set(outcomes))
                self.close()
                report = "".join(f"\n--- rank {r} ---\n{v}" for r, (ok, v) in sorted(outcomes.items()) if not ok)
                if report:
                    raise AssertionError(f"{fn.__name__} failed; ranks {missing} were left blocked:{report}") from None
                raise TimeoutError(f"{fn.__name__} on {self.world} ranks: ranks {missing} did not finish within "
                                   f"{timeout:.0f}s (hang?).{report}") from None
            outcomes[rank] = (ok, value)
        failures = {r: v for r, (ok, v) in outcomes.items() if not ok}
        if failures:
            report = "".join(f"\n--- rank {r} ---\n{v}" for r, v in sorted(failures.items()))
            raise AssertionError(f"{fn.__name__} failed on ranks {sorted(failures)}:{report}")
        return [outcomes[r][1] for r in range(self.world)]

    def close(self) -> None:
        """Stop the workers (killing them if they are stuck)."""
        for q in getattr(self, "_tasks", []):
            try:
                q.put(None)
            except Exception:
                pass
        for p in self._procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join()
        self._procs = []

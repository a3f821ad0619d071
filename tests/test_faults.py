"""A rank that dies, raises or hangs mid-forward makes the others fail within the process group's timeout."""

import os
import subprocess
import sys
import time

import pytest

from cp_hooks.comm import shared_memory
from distributed import _free_port

WORKER = os.path.join(os.path.dirname(__file__), "fault_worker.py")
BOUND_S = 60  # PG timeout is 5 s; start-up (importing torch and diffusers) takes most of the rest


# Ulysses' all-to-alls go through shared memory on one host (cp_hooks.shared_memory), whose waits have
# their own timeout and liveness check: its die and hang cases name the peer in the error.
SHM_ERRORS = {"die": "exited while this rank waited", "hang": "within the process group's timeout (5 s)"}


@pytest.mark.parametrize(
    "mode,ring,ulysses,rotate",
    [("die", 1, 3, "allgather"), ("hang", 1, 3, "allgather"), ("raise", 3, 1, "allgather"),
     ("hang", 3, 1, "alltoall")],
)
def test_other_ranks_fail_fast(mode, ring, ulysses, rotate):
    port, world = _free_port(), 3
    # CP_HOOKS_SHM=1: shared memory even with 3 ranks on fewer cores (this machine has 2).
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), CP_HOOKS_SHM="1")
    start = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, WORKER, mode, str(ring), str(ulysses), rotate],
                         env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]
    try:
        survivors = [procs[0], procs[2]]
        codes = [p.wait(timeout=BOUND_S) for p in survivors]
        elapsed = time.monotonic() - start
        logs = [p.stdout.read() for p in survivors]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert all(code != 0 for code in codes), f"a surviving rank exited 0:\n{logs}"
    assert not any("finished without error" in log for log in logs)
    assert elapsed < BOUND_S
    if ulysses > 1 and not shared_memory.local_reasons_against():
        assert all("cp_hooks shared-memory all-to-all: rank 1 of the group" in log and SHM_ERRORS[mode] in log
                   for log in logs), logs

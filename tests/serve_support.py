"""Helpers of tests/test_serve.py and benchmarks/serve_load.py: start `python -m cp_hooks serve` on loopback
(under torchrun, or one process per rank started here), wait for it, call it, decode its PNGs, and compute the
one-process reference image of a request."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The tiny models' default calls, as the service makes them (cp_hooks.serve.worker.call_defaults).
TINY_FLUX_DEFAULTS = dict(height=128, width=128, max_sequence_length=32, num_inference_steps=4)
TINY_WAN_DEFAULTS = dict(height=64, width=64, num_frames=5, max_sequence_length=32, num_inference_steps=4)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def start_torchrun(port: int, args: list[str], log: Path, nproc: int = 2) -> subprocess.Popen:
    """`torchrun --nproc_per_node nproc -m cp_hooks serve --port port ARGS`, output to `log`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", HOST,
           "--master_port", str(free_port()), "-m", "cp_hooks", "serve", "--host", HOST, "--port", str(port), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_ranks(port: int, args: list[str], log_dir: Path, world: int = 2) -> list[subprocess.Popen]:
    """One process per rank, with the environment a launcher sets (so that each rank's exit status is seen)."""
    master = str(free_port())
    procs = []
    for rank in range(world):
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR=HOST, MASTER_PORT=master)
        cmd = [sys.executable, "-m", "cp_hooks", "serve", "--host", HOST, "--port", str(port), *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=(log_dir / f"rank{rank}.log").open("w"),
                                      stderr=subprocess.STDOUT))
    return procs


def wait_healthy(port: int, procs: list[subprocess.Popen], timeout: float, logs: list[Path] = (),
                 seen: list | None = None) -> dict:
    """Poll `/health` until 200 (returns its body); fail if a process exits or `timeout` passes. `seen` gets
    the (status, body) of every answer before it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"the service exited with {p.returncode} before it was healthy:\n"
                                     + "\n".join(tail(log) for log in logs))
        try:
            r = httpx.get(f"http://{HOST}:{port}/health", timeout=2)
            if r.status_code == 200:
                return r.json()
            if seen is not None:
                seen.append((r.status_code, r.json()))
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not healthy after {timeout} s:\n" + "\n".join(tail(log) for log in logs))


def post(port: int, body, timeout: float = 60.0, raw: bytes | None = None, path: str = "/v1/images/generations"):
    """POST `body` (JSON) or `raw` bytes to the service; returns the httpx response."""
    url = f"http://{HOST}:{port}{path}"
    if raw is not None:
        return httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=timeout)
    return httpx.post(url, json=body, timeout=timeout)


def decode_png(b64: str):
    """The uint8 HxWx3 array of a base64 PNG."""
    import numpy as np
    from PIL import Image

    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def reference_images(pipe, prompt: str, seed: int, n: int = 1, **call):
    """What one process makes of an image request: the same call, a CPU generator seeded with `seed`."""
    import numpy as np
    import torch

    kwargs = dict(TINY_FLUX_DEFAULTS, **call)
    out = pipe(prompt=prompt, num_images_per_prompt=n, generator=torch.Generator("cpu").manual_seed(seed),
               output_type="pil", **kwargs)
    return [np.array(image.convert("RGB")) for image in out.images]


def reference_video(pipe, prompt: str, seed: int, **call):
    """What one process makes of a video request (one video): its frames as uint8 arrays."""
    import numpy as np
    import torch

    kwargs = dict(TINY_WAN_DEFAULTS, **call)
    out = pipe(prompt=prompt, num_videos_per_prompt=1, generator=torch.Generator("cpu").manual_seed(seed),
               output_type="pil", **kwargs)
    return [np.array(frame.convert("RGB")) for frame in out.frames[0]]


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal the processes that still run, then kill what is left after `timeout`."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def children(pid: int) -> list[int]:
    """The child process ids of `pid` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [line for line in text if "Enum subclass" not in line]
    return f"--- {path} ---\n" + "\n".join(keep[-lines:])

"""Load test of `python -m cp_hooks serve`: N requests from C concurrent HTTP clients on loopback, against the
same requests run by calling the pipeline in a loop on the same ranks.

    python benchmarks/serve_load.py                          # 200 requests, 8 clients, 2 CPU ranks, tiny Flux
    python benchmarks/serve_load.py --requests 50 --size 64x64 --nproc 2 --ulysses-degree 2

Three launches of `--nproc` ranks, one after the other on the same machine:
  1. the loop: `torchrun benchmarks/serve_load.py --loop ...` builds and parallelizes the pipeline exactly as the
     service does (`cp_hooks.serve.worker`), runs every request in order, and writes each image's SHA-256 and the
     loop's throughput;
  2. the service: `torchrun -m cp_hooks serve ...`; C client threads send the requests (request i: prompt
     i mod 8, seed i) and record each latency and status;
  3. the loop again: on a shared machine the background load drifts, so the loop's throughput is the mean of a
     run before and a run after the service's (both are printed).
Every request must come back 200 with exactly the image the loop made (same ranks, same code: bit-identical),
so none is lost and each is correct. Printed: p50 / p99 latency, throughput of both, and their ratio. Bounded:
`--time-limit` seconds for each phase. Exit status 1 if a request is lost or wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PROMPTS = ["a cat", "a red fox in the snow", "a blue bird over the sea", "a castle on a mountain at night",
           "a small robot in a garden", "a ship on a lake", "a golden dog running", "a city street in the rain"]
WARMUP = 8


def request_body(i: int, args) -> dict:
    return {"prompt": PROMPTS[i % len(PROMPTS)], "seed": i, "size": args.size, "num_inference_steps": args.steps}


def pixels_hash(image) -> str:
    """SHA-256 of an image's RGB pixels (PIL image or HxWx3 uint8 array)."""
    import numpy as np

    array = np.ascontiguousarray(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))
    return hashlib.sha256(array.tobytes()).hexdigest()


def run_loop(args) -> None:
    """Each rank (under torchrun): the service's pipeline, called in a loop over the requests."""
    import torch
    import torch.distributed as dist

    from cp_hooks import enable_parallelism, init_distributed, shutdown_distributed
    from cp_hooks.serve.worker import DTYPES, build_config, build_pipeline, call_defaults, default_threads

    torch.set_num_threads(default_threads())
    device = init_distributed()
    pipe = build_pipeline(args.model, DTYPES["float32"], device, heads=4)
    config = build_config(device, args.ulysses_degree, 1, 1, "allgather", False, 300.0)
    if config is not None:
        enable_parallelism(pipe, config)
    width, height = (int(x) for x in args.size.split("x"))

    def call(i: int):
        body = request_body(i, args)
        kwargs = dict(call_defaults(args.model, pipe), prompt=body["prompt"], width=width, height=height,
                      num_inference_steps=args.steps, num_images_per_prompt=1)
        return pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(body["seed"]), output_type="pil").images[0]

    for i in range(WARMUP):
        call(args.requests + i)
    dist.barrier()
    start = time.perf_counter()
    hashes = []
    for i in range(args.requests):
        image = call(i)
        if dist.get_rank() == 0:
            hashes.append(pixels_hash(image))
    seconds = time.perf_counter() - start
    if dist.get_rank() == 0:
        Path(args.loop_out).write_text(json.dumps({"seconds": seconds, "hashes": hashes}))
    shutdown_distributed()


def _torchrun(args, extra: list[str], log: Path) -> subprocess.Popen:
    from serve_support import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run_clients(port: int, args) -> tuple[list, float]:
    """Send every request from `args.clients` threads; returns ([(i, status, seconds, hash or error)], wall s)."""
    import httpx

    from serve_support import decode_png

    todo: queue.Queue[int] = queue.Queue()
    for i in range(args.requests):
        todo.put(i)
    results = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.time_limit

    def client():
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=args.time_limit) as http:
            while time.monotonic() < deadline:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/images/generations", json=request_body(i, args))
                    seconds = time.perf_counter() - t0
                    detail = pixels_hash(decode_png(r.json()["data"][0]["b64_json"])) if r.status_code == 200 \
                        else r.text[:200]
                    status = r.status_code
                except Exception as exc:  # noqa: BLE001 - a lost request, reported below
                    status, seconds, detail = 0, time.perf_counter() - t0, repr(exc)
                with lock:
                    results.append((i, status, seconds, detail))

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.time_limit + 30)
    return results, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--ulysses-degree", type=int, default=None)
    p.add_argument("--model", default="tiny-flux")
    p.add_argument("--size", default="128x128")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per phase")
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # a rank of the loop phase
    p.add_argument("--loop-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop:
        run_loop(args)
        return 0

    import httpx

    from serve_support import free_port, tail, wait_healthy

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    common = ["--model", args.model] + (["--ulysses-degree", str(args.ulysses_degree)] if args.ulysses_degree else [])
    print(f"{args.requests} requests, {args.clients} clients, {args.nproc} ranks, {args.model} {args.size} "
          f"{args.steps} steps (logs in {work})", flush=True)

    def loop_phase(name: str) -> dict | None:
        """The pipeline in a loop on the ranks: {"seconds": ..., "hashes": [...]}, or None if it failed."""
        out = work / f"{name}.json"
        loop = _torchrun(args, [str(Path(__file__).resolve()), "--loop", "--loop-out", str(out), "--requests",
                                str(args.requests), "--size", args.size, "--steps", str(args.steps), *common],
                         work / f"{name}.log")
        try:
            loop.wait(args.time_limit + 120)
        except subprocess.TimeoutExpired:
            loop.kill()
            loop.wait()
        if loop.returncode != 0 or not out.exists():
            print(f"the loop phase failed ({loop.returncode}):\n{tail(work / f'{name}.log')}")
            return None
        return json.loads(out.read_text())

    # Phase 1: the pipeline in a loop on the ranks.
    reference = loop_phase("loop_before")
    if reference is None:
        return 1

    # Phase 2: the service under load.
    port = free_port()
    server = _torchrun(args, ["-m", "cp_hooks", "serve", "--host", "127.0.0.1", "--port", str(port),
                              "--max-queue", str(max(64, 2 * args.clients)), *common], work / "serve.log")
    try:
        wait_healthy(port, [server], 300, [work / "serve.log"])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for i in range(WARMUP):  # the same warm-up as the loop's
                http.post("/v1/images/generations", json=request_body(args.requests + i, args)).raise_for_status()
        results, wall = run_clients(port, args)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()

    # Phase 3: the loop again (the machine's load drifts).
    after = loop_phase("loop_after")
    if after is None:
        return 1
    loop_rates = [args.requests / reference["seconds"], args.requests / after["seconds"]]
    loop_throughput = statistics.mean(loop_rates)

    ok = [r for r in results if r[1] == 200]
    wrong = [r for r in ok if r[3] != reference["hashes"][r[0]]]
    lost = args.requests - len(ok)
    latencies = sorted(r[2] for r in ok)
    serve_throughput = len(ok) / wall
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    report = {
        "requests": args.requests, "clients": args.clients, "ranks": args.nproc, "model": args.model,
        "size": args.size, "steps": args.steps, "answered_200": len(ok), "lost": lost, "wrong_image": len(wrong),
        "statuses": sorted({r[1] for r in results}),
        "latency_p50_s": round(q[49], 4), "latency_p99_s": round(q[98], 4),
        "serve_throughput_rps": round(serve_throughput, 3), "loop_throughput_rps": round(loop_throughput, 3),
        "loop_before_after_rps": [round(r, 3) for r in loop_rates],
        "loop_images_equal_before_after": after["hashes"] == reference["hashes"],
        "serve_over_loop": round(serve_throughput / loop_throughput, 3),
    }
    print(json.dumps(report, indent=2))
    steps_line = [line for line in metrics.splitlines() if line.startswith("cp_hooks_serve_steps_per_second ")]
    print(f"service's last steps/s: {steps_line[0].split()[1] if steps_line else '?'}")
    for r in (results if lost else [])[:5]:
        if r[1] != 200:
            print("failed:", r)
    return 0 if lost == 0 and not wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())

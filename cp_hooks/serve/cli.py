"""`python -m cp_hooks serve`: start-up, the worker loop of every rank, signals and exit statuses.

    torchrun --nproc_per_node 2 -m cp_hooks serve                        # tiny Flux, 2 CPU ranks, port 8000
    torchrun --nproc_per_node 4 -m cp_hooks serve --model black-forest-labs/FLUX.1-dev --dtype bfloat16 \\
        --ulysses-degree 4 --host 0.0.0.0 --port 8000

The loop (the same on every rank, one iteration per message):

    rank 0: take the next queued request (or, when idle for --heartbeat-s, a "ping"; on SIGTERM, "shutdown")
    all:    broadcast the message from rank 0  -> every rank sees every request, in the same order
    all:    run it (`Worker.execute`: every rank agrees on success or failure)
    all:    agree on "does any rank want to stop?" (SIGTERM may reach any rank, e.g. from torchrun)

The heartbeat keeps the non-zero ranks' wait for the next message under the control group's timeout and
notices a dead peer while idle. Exit statuses: 0 after a graceful shutdown (SIGTERM / SIGINT on any rank, the
running request finished), 1 when a collective failed (a rank died or hung: every survivor exits, rank 0
answers 503 until then), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

SHUTDOWN_LINGER_S = 3.0  # after a fatal error, rank 0 keeps answering 503 this long before exiting


def parser() -> argparse.ArgumentParser:
    """The options of `python -m cp_hooks serve`."""
    p = argparse.ArgumentParser(
        prog="python -m cp_hooks serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        default="tiny-flux",
        help='"tiny-flux" (default: a tiny random Flux built offline), "tiny-wan" (a tiny random video '
        "pipeline), or a diffusers pipeline's hub id or local path",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "float64"], default="float32")
    p.add_argument("--host", default="127.0.0.1", help="address rank 0 listens on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    g = p.add_argument_group("parallelism (as examples/generate.py)")
    g.add_argument(
        "--ulysses-degree",
        "--ulysses",
        dest="ulysses",
        type=int,
        default=None,
        help="Ulysses degree (default: world size / (cfg * ring))",
    )
    g.add_argument("--ring-degree", "--ring", dest="ring", type=int, default=1, help="ring degree")
    g.add_argument(
        "--rotate-method",
        choices=["allgather", "alltoall"],
        default="allgather",
        help="ring: gather all key/value shards at once, or pass one at a time around the ring",
    )
    g.add_argument(
        "--cfg-degree",
        type=int,
        default=1,
        help="classifier-free-guidance groups (the conditional and unconditional passes at once)",
    )
    g.add_argument(
        "--anything",
        action="store_true",
        help="allow sequence lengths / head counts the degrees do not divide (anything modes)",
    )
    g.add_argument("--heads", type=int, default=4, help="attention heads of the tiny models")
    s = p.add_argument_group("service")
    s.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429")
    s.add_argument("--max-images", type=int, default=4, help="largest n per request")
    s.add_argument("--max-steps", type=int, default=50, help="most num_inference_steps per request")
    s.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest width x height (default: 256x256 for the tiny models, 2048x2048 otherwise)",
    )
    s.add_argument(
        "--pg-timeout",
        type=float,
        default=300.0,
        help="seconds a collective may wait for a peer before the service gives up and exits non-zero",
    )
    s.add_argument(
        "--load-timeout", type=float, default=1800.0, help="seconds every rank may take to start and load the model"
    )
    s.add_argument(
        "--heartbeat-s",
        type=float,
        default=None,
        help="idle seconds between control messages (default: min(5, pg-timeout / 3))",
    )
    s.add_argument(
        "--fault-injection",
        action="store_true",
        help="TESTS ONLY: accept the request field fault_injection (make a rank raise, or slow down)",
    )
    return p


class _Signals:
    """SIGTERM / SIGINT on any rank: remember it; the worker loop turns it into a graceful shutdown.

    The default action (die at once) would leave the peers in a collective with a dead rank; instead the
    running request finishes and every rank leaves the loop at the same message.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        # Rank 0: refuse new requests at once (they would only wait to be refused).
        self.on_signal: Callable[[], None] | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.on_signal is not None:
            self.on_signal()


class _HttpServer:
    """uvicorn in a daemon thread of rank 0 (the main thread runs the worker loop and gets the signals)."""

    def __init__(self, app, sock: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[sock]), name="http", daemon=True)
        self.thread.start()

    def wait_started(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.server.started

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def _log(message: str) -> None:
    print(f"[cp_hooks serve] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the service on this rank until a shutdown; returns the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    signals = _Signals()

    http: _HttpServer | None = None
    service: Service | None = None
    sock: socket.socket | None = None
    if rank == 0:
        # Bind before anything slow, so that a taken port fails at once with a clear message, and /health
        # answers 503 ("loading") while the ranks load the model.
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((args.host, args.port))
        except OSError as exc:
            _log(f"cannot listen on {args.host}:{args.port}: {exc}; choose another --port")
            sock = None
    # Heavy imports after the bind (the health endpoint is up while they run).
    import torch
    import torch.distributed as dist

    from cp_hooks import disable_parallelism, enable_parallelism, init_distributed, shutdown_distributed
    from cp_hooks.serve.app import Limits, Service, create_app
    from cp_hooks.serve.broadcast import FATAL, ControlChannel
    from cp_hooks.serve.worker import DTYPES, Worker, build_config, build_pipeline, default_threads, describe_mode

    if rank == 0 and sock is not None:
        # The service object exists before the model: the app answers /health with 503 until `ready`.
        service = Service(
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            max_queue=args.max_queue,
            limits=Limits(),
            defaults={},
            model=args.model,
        )
        http = _HttpServer(create_app(service), sock)
        signals.on_signal = lambda: service.stop("stopping", "the service is shutting down")
        if not http.wait_started(30):
            _log("the HTTP server did not start")
            sock = None

    torch.set_num_threads(default_threads())
    if "RANK" not in os.environ:  # `python -m cp_hooks serve` without a launcher: one process
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    # The default group only starts things up and shuts them down, so it gets the long timeout (ranks import
    # and load at different speeds); the model's groups and the control channel get --pg-timeout.
    device = init_distributed(timeout_s=max(args.load_timeout, args.pg_timeout))
    world = dist.get_world_size()
    channel = ControlChannel(args.pg_timeout)
    heartbeat = args.heartbeat_s or min(5.0, args.pg_timeout / 3)

    # Start-up: every rank loads, then all agree that all succeeded (a rank that failed says so instead of
    # leaving the others waiting), then parallelize (a collective: it creates the mesh's groups).
    failure = "" if rank != 0 or sock is not None else f"rank 0 cannot serve HTTP on {args.host}:{args.port}"
    pipe = config = None
    if not failure:
        try:
            pipe = build_pipeline(args.model, DTYPES[args.dtype], device, args.heads)
        except Exception as exc:  # noqa: BLE001 - reported to every rank below
            failure = f"rank {rank} could not load {args.model!r}: {type(exc).__name__}: {exc}"
    channel.barrier(args.load_timeout)
    if channel.agree(int(bool(failure)))[0]:
        _log(failure or f"rank {rank}: exiting, the start-up failed on another rank (its log says why)")
        return 1
    try:
        config = build_config(
            device, args.ulysses, args.ring, args.cfg_degree, args.rotate_method, args.anything, args.pg_timeout
        )
        if config is not None:
            enable_parallelism(pipe, config)  # the transformer(s) and the VAE, over every rank
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the same on every rank (degrees, heads)
        failure = f"rank {rank}: cannot parallelize the pipeline: {type(exc).__name__}: {exc}"
    if channel.agree(int(bool(failure)))[0]:
        _log(failure or f"rank {rank}: exiting, the start-up failed on another rank (its log says why)")
        return 1

    worker = Worker(pipe, channel, device)
    if rank == 0:
        assert service is not None
        _configure(service, args, pipe, config, worker)
        service.ready(describe_mode(config))
        _log(f"serving {args.model} on http://{args.host}:{args.port} with {world} ranks ({service.mode})")

    cause = "a peer rank failed in a collective"
    try:
        status = _loop(rank, channel, worker, service, signals, heartbeat)
    except Exception as exc:  # noqa: BLE001 - a collective failed: the ranks are no longer in step
        cause = f"{type(exc).__name__}: {exc}"
        _log(f"rank {rank}: fatal: {cause}")
        status = FATAL
    if status == FATAL:
        if service is not None:
            service.stop("failed", f"a rank failed ({cause}); the service is exiting (a supervisor should restart it)")
            time.sleep(SHUTDOWN_LINGER_S)  # answer 503 meanwhile, so that clients learn why
        if http is not None:
            http.stop(timeout=2)
        # The process groups are broken (a peer is gone or out of step): tearing them down could block, so
        # leave without it. Exit status 1 tells a supervisor (torchrun, systemd, Kubernetes) to restart.
        sys.stderr.flush()
        os._exit(1)

    # Graceful: every rank left the loop at the same message.
    if http is not None:
        http.stop()
    if config is not None:
        disable_parallelism(pipe)
    del worker, pipe, config
    shutdown_distributed()  # barrier, destroy every group, join gloo's threads
    _log(f"rank {rank}: stopped")
    return 0


def _configure(service, args, pipe, config, worker) -> None:
    """Fill rank 0's limits and defaults from the loaded pipeline."""
    from cp_hooks.serve.worker import call_defaults

    limits = service.limits
    tiny = args.model.startswith("tiny-")
    scale = getattr(pipe, "vae_scale_factor", None) or getattr(pipe, "vae_scale_factor_spatial", None) or 8
    video = "num_frames" in worker.accepts
    # Flux-like image pipelines pack 2 x 2 latent patches; video transformers patch 2 x 2 in space too.
    limits.size_multiple = 2 * scale
    limits.min_side = 2 * scale
    cp = 1 if config is None else (config.ring_degree or 1) * (config.ulysses_degree or 1)
    limits.tokens_divisible_by = 1 if args.anything else cp
    limits.max_pixels = args.max_pixels or (256 * 256 if tiny else 2048 * 2048)
    limits.max_images = args.max_images
    limits.max_steps = args.max_steps
    limits.accepts = frozenset(worker.accepts)
    limits.fault_injection = args.fault_injection
    limits.frame_multiple = getattr(pipe, "vae_scale_factor_temporal", 4) or 4
    service.defaults = call_defaults(args.model, pipe)
    service.video = video


def _loop(rank: int, channel, worker, service, signals, heartbeat: float) -> int:
    """The worker loop (see the module docstring); returns OK after a shutdown every rank agreed on, FATAL
    after a request whose collectives failed."""
    from cp_hooks.serve.broadcast import FATAL, OK

    while True:
        job = message = None
        if rank == 0:
            job, message = _next_message(service, signals, heartbeat)
        # Collective 1: every rank gets the same message, in the same order (only rank 0's argument counts).
        message = channel.broadcast(message)
        if message["op"] == "run":
            outcome = worker.execute(message)
            if rank == 0:
                service.finish(job, outcome)
            if outcome.status == FATAL:
                return FATAL
        # Collective 2: does any rank want to stop? SIGTERM may reach a rank other than 0 (torchrun forwards it
        # to every worker); with this every rank leaves the loop after the same message.
        stop = channel.agree(int(signals.received is not None or message["op"] == "shutdown"))[0]
        if stop:
            if rank == 0:
                service.stop("stopping", "the service is shutting down")
            return OK


def _next_message(service, signals, heartbeat: float):
    """Rank 0: (job or None, the next message to broadcast): a request, a heartbeat after `heartbeat` idle
    seconds, or a shutdown once a signal came (the queued requests then get 503; the running one finished)."""
    deadline = time.monotonic() + heartbeat
    while True:
        if signals.received is not None:
            service.stop("stopping", "the service is shutting down")
            return None, {"op": "shutdown"}
        job = service.next_job(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
        if job is not None:
            return job, job.message
        if time.monotonic() >= deadline:
            return None, {"op": "ping"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""Rank 0's HTTP side: request schemas and validation, the bounded FIFO queue, and the FastAPI app.

Everything a client can get wrong is checked here, on rank 0, before a request is queued: the schema
(pydantic, unknown fields refused), then the limits of this service and model (`Limits.check`). Only a
request that passed both ever reaches the ranks. The queue holds at most `max_queue` requests waiting behind
the one running; beyond that a request gets 429 with `Retry-After`. Requests run one at a time in arrival
order (the worker loop in `cli.py` takes them from the queue); the HTTP thread only waits for their result
and encodes the PNGs, which overlaps with the next request's run on the ranks.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import itertools
import math
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cp_hooks.serve.metrics import Metrics

MAX_SEED = 2**63 - 1


class FaultInjection(BaseModel):
    """Test-only faults, accepted only when the service was started with `--fault-injection`.

    raise_on_rank: this rank raises `InjectedFault` (the others do not). raise_at: "step" (in the pipeline,
    at the end of denoising step `raise_at_step`) or "prepare" (before the pipeline is called).
    sleep_per_step_s: every rank sleeps this long at each step's end (makes a request slow, to fill the
    queue or to kill a rank while it runs).
    """

    model_config = ConfigDict(extra="forbid")
    raise_on_rank: int | None = Field(None, ge=0)
    raise_at: Literal["step", "prepare"] = "step"
    raise_at_step: int = Field(0, ge=0)
    sleep_per_step_s: float = Field(0.0, ge=0.0, le=10.0)


class ImageRequest(BaseModel):
    """`POST /v1/images/generations`: OpenAI's fields plus `seed`, `num_inference_steps`, `guidance_scale`,
    `negative_prompt` (and `true_cfg_scale` for pipelines that take it). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=4000)
    n: int = Field(1, ge=1, description="images from this prompt (the pipeline's num_images_per_prompt)")
    size: str | None = Field(None, description='"WIDTHxHEIGHT" in pixels, e.g. "128x128"')
    response_format: Literal["b64_json"] = "b64_json"
    model: str | None = Field(None, description="accepted for OpenAI clients; the service serves one model")
    user: str | None = Field(None, max_length=256)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="default: drawn by the service, returned")
    num_inference_steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    negative_prompt: str | None = Field(None, max_length=4000)
    true_cfg_scale: float | None = Field(None, ge=0.0, le=100.0)
    fault_injection: FaultInjection | None = None


class VideoRequest(ImageRequest):
    """`POST /v1/videos/generations` (video pipelines): the image fields plus `num_frames` and `fps`."""

    num_frames: int | None = Field(None, ge=1)
    fps: int = Field(16, ge=1, le=120)


class RequestError(ValueError):
    """A request the service refuses: `param` names the field, the message says what to change."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Limits:
    """What this service accepts, beyond the schema.

    Args:
        max_images: most images (`n`) per request.
        max_steps: most denoising steps per request.
        max_pixels: largest width x height.
        size_multiple: width and height must be multiples of this (the VAE's downsampling x the transformer's
            patch: 2 x 2 latent packing for Flux-like pipelines).
        min_side: smallest width or height.
        tokens_divisible_by: (width / size_multiple) x (height / size_multiple) image tokens must be a multiple
            of this (the context-parallel degree, when the uneven "anything" modes are off); 1 to skip.
        max_frames: most frames per video.
        frame_multiple: (num_frames - 1) must be a multiple of this (the VAE's temporal compression).
        accepts: the pipeline's call arguments (a field the pipeline does not take is refused).
        fault_injection: whether `fault_injection` is accepted.
    """

    max_images: int = 4
    max_steps: int = 50
    max_pixels: int = 256 * 256
    size_multiple: int = 16
    min_side: int = 16
    tokens_divisible_by: int = 1
    max_frames: int = 33
    frame_multiple: int = 4
    accepts: frozenset = frozenset()
    fault_injection: bool = False

    def parse_size(self, size: str) -> tuple[int, int]:
        """(width, height) of "WxH", or RequestError saying what a valid size looks like."""
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise RequestError(f'size {size!r} is not of the form "WIDTHxHEIGHT", e.g. "{self.example_size()}"', "size")
        width, height = (int(p) for p in parts)
        m = self.size_multiple
        problems = []
        if width % m or height % m:
            problems.append(f"width and height must be multiples of {m}")
        if min(width, height) < self.min_side:
            problems.append(f"each side must be at least {self.min_side} pixels")
        if width * height > self.max_pixels:
            problems.append(f"width x height must be at most {self.max_pixels} pixels")
        if not problems and ((width // m) * (height // m)) % self.tokens_divisible_by:
            problems.append(
                f"({width}/{m}) x ({height}/{m}) = {(width // m) * (height // m)} image tokens must be a "
                f"multiple of {self.tokens_divisible_by}, the number of context-parallel ranks"
            )
        if problems:
            raise RequestError(
                f"size {size!r} cannot be generated by this model: "
                + "; ".join(problems)
                + f' (e.g. "{self.example_size()}")',
                "size",
            )
        return width, height

    def example_size(self) -> str:
        """A size this service accepts: the largest square up to 128 pixels a side whose token count the
        context-parallel degree divides (else the smallest such square)."""
        m = self.size_multiple
        top = max(m, min(128, math.isqrt(self.max_pixels)) // m * m)
        for side in range(top, m - 1, -m):
            if side >= self.min_side and (side // m) ** 2 % self.tokens_divisible_by == 0:
                return f"{side}x{side}"
        side = m * self.tokens_divisible_by  # (degree x degree) tokens: always divisible
        return f"{side}x{side}"

    def check(self, request: ImageRequest, defaults: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's keyword arguments for `request`, or RequestError for the first field out of range."""
        if request.n > self.max_images:
            raise RequestError(
                f"n = {request.n} is more images than this service makes per request; ask for at most "
                f"{self.max_images} (and send several requests for more)",
                "n",
            )
        if request.num_inference_steps is not None and request.num_inference_steps > self.max_steps:
            raise RequestError(
                f"num_inference_steps = {request.num_inference_steps} is over this service's limit of "
                f"{self.max_steps}; ask for fewer steps",
                "num_inference_steps",
            )
        if request.fault_injection is not None and not self.fault_injection:
            raise RequestError(
                "fault_injection is a test-only field: start the service with --fault-injection to use it",
                "fault_injection",
            )
        call = {key: value for key, value in defaults.items() if key in self.accepts}
        call.update(prompt=request.prompt, num_images_per_prompt=request.n)
        for name in ("num_inference_steps", "guidance_scale", "negative_prompt", "true_cfg_scale"):
            value = getattr(request, name)
            if value is None:
                continue
            if name not in self.accepts:
                raise RequestError(f"{name} is not taken by this model's pipeline; leave it out", name)
            call[name] = value
        if request.size is not None:
            call["width"], call["height"] = self.parse_size(request.size)
        if isinstance(request, VideoRequest) and request.num_frames is not None:
            frames = request.num_frames
            if frames > self.max_frames or (frames - 1) % self.frame_multiple:
                raise RequestError(
                    f"num_frames = {frames}: it must be 1 plus a multiple of {self.frame_multiple}, "
                    f"at most {self.max_frames}",
                    "num_frames",
                )
            call["num_frames"] = frames
        if "num_images_per_prompt" not in self.accepts:  # video pipelines call it num_videos_per_prompt
            call["num_videos_per_prompt"] = call.pop("num_images_per_prompt")
        return call


@dataclass
class Job:
    """One queued request: the message broadcast to the ranks, and the future the HTTP handler awaits."""

    message: dict
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)


class ServiceUnavailable(Exception):
    """The request could not be run (loading, shutting down, or a rank failed): answered with 503."""


class RequestFailed(Exception):
    """The pipeline raised on some rank; the ranks are in step (answered with 500)."""


class Service:
    """Rank 0's state: the lifecycle, the bounded FIFO queue and the metrics, shared by the HTTP thread and
    the worker loop.

    The lifecycle: "loading" -> "ready" -> "stopping" (SIGTERM: the running request finishes, new and
    queued ones get 503) or "failed" (a collective failed: every request gets 503 until the process exits).

    Args:
        world_size: ranks serving (reported by `/health`).
        max_queue: requests that may wait behind the running one; more get 429.
        limits: what requests may ask for.
        defaults: the pipeline arguments a request does not set (sizes, steps, text length).
        model: the served model's name.
        video: whether the pipeline makes videos (then `/v1/videos/generations` replaces the image endpoint).
    """

    def __init__(
        self, world_size: int, max_queue: int, limits: Limits, defaults: dict[str, Any], model: str, video: bool = False
    ) -> None:
        self.world_size = world_size
        self.limits = limits
        self.defaults = defaults
        self.model = model
        self.video = video
        self.mode = "loading"
        self.state = "loading"
        self.reason = "the model is loading on every rank"
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        # State changes vs. enqueueing: no job is queued after the queue is drained. Reentrant because the
        # SIGTERM handler (which runs on the main thread, between any two bytecodes) also stops the service.
        self._lock = threading.RLock()
        self._ids = itertools.count()
        self._in_flight = 0
        self._running: Job | None = None  # the job on the ranks now
        self._recent_seconds = 1.0  # an estimate of one request's run time, for Retry-After
        self.metrics = Metrics(queue_depth=self._queue.qsize, in_flight=lambda: self._in_flight)

    # -- HTTP side -----------------------------------------------------------------------------------------
    def submit(self, call: dict[str, Any], seed: int, fault: dict | None, task: str) -> Job:
        """Queue a validated request; raises ServiceUnavailable (503) or queue.Full (429)."""
        with self._lock:
            if self.state != "ready":
                raise ServiceUnavailable(self.reason)
            job = Job(message=dict(op="run", id=next(self._ids), task=task, call=call, seed=seed, fault=fault))
            self._queue.put_nowait(job)  # queue.Full when max_queue requests already wait
        return job

    def retry_after(self) -> int:
        """Seconds a client refused with 429 should wait: the queue's expected drain time, at least 1."""
        return max(1, math.ceil((self._queue.qsize() + 1) * self._recent_seconds))

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body) of `/health`."""
        body = {
            "status": "ok" if self.state == "ready" else self.state,
            "ranks": self.world_size,
            "mode": self.mode,
            "model": self.model,
            "queue_depth": self._queue.qsize(),
            "in_flight": self._in_flight,
        }
        if self.state != "ready":
            body["reason"] = self.reason
            return 503, body
        return 200, body

    # -- worker-loop side -------------------------------------------------------------------------------------
    def ready(self, mode: str) -> None:
        """Every rank has loaded and parallelized the model: start taking requests."""
        with self._lock:
            self.mode = mode
            if self.state == "loading":
                self.state = "ready"
                self.reason = ""

    def next_job(self, timeout: float) -> Job | None:
        """The oldest queued job, waiting at most `timeout` seconds; None if there is none."""
        try:
            job = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self._in_flight = 1
        self._running = job
        return job

    def finish(self, job: Job, outcome) -> None:
        """Hand a job's outcome (`worker.Outcome`) to its HTTP handler."""
        from cp_hooks.serve.broadcast import FAILED, OK

        self._in_flight = 0
        self._running = None
        self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * max(outcome.seconds, 1e-3)
        if outcome.status == OK:
            self.metrics.observe_generation(outcome.steps, outcome.seconds, len(outcome.output))
            job.future.set_result(outcome)
        elif outcome.status == FAILED:
            job.future.set_exception(RequestFailed("; ".join(outcome.errors) or "the pipeline failed"))
        else:
            job.future.set_exception(
                ServiceUnavailable(
                    "a rank failed in a collective (" + "; ".join(outcome.errors) + "); the service is restarting"
                )
            )

    def stop(self, state: str, reason: str) -> None:
        """Refuse new requests from now on (state "stopping" or "failed") and answer every queued one 503."""
        with self._lock:
            if self.state in ("stopping", "failed") and state == "stopping":
                return
            self.state, self.reason = state, reason
            running = self._running
            if state == "failed" and running is not None and not running.future.done():
                # The worker loop left the request mid-way (a collective failed): it gets 503 too.
                running.future.set_exception(ServiceUnavailable(reason))
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                job.future.set_exception(ServiceUnavailable(reason))

    @property
    def accepting(self) -> bool:
        return self.state == "ready"


def _png_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(status: int, message: str, kind: str, param: str | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status,
        headers=headers,
        content={"error": {"message": message, "type": kind, "param": param, "code": None}},
    )


def _validation_message(errors: Sequence[Any], fields: list[str]) -> tuple[str, str | None]:
    """A readable message (and the first field) from pydantic / FastAPI validation errors."""
    parts, param = [], None
    for err in errors[:5]:
        kind = err.get("type", "")
        loc = [str(x) for x in err.get("loc", ()) if x != "body"] if kind != "json_invalid" else []
        name = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        if kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            parts.append(
                f"the body is not valid JSON ({detail}); send a JSON object such as "
                '{"prompt": "a cat", "size": "128x128"}'
            )
        elif kind == "extra_forbidden":
            parts.append(f"unknown field {name!r}; the accepted fields are {', '.join(fields)}")
        elif kind == "missing":
            parts.append(f"{name} is required")
        elif kind == "model_attributes_type" or (kind == "dict_type" and not loc):
            parts.append(
                'the body must be a JSON object such as {"prompt": "a cat"}, sent with the header '
                "Content-Type: application/json"
            )
        else:
            parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "; ".join(parts), param


def create_app(service: Service):
    """The FastAPI application of `service` (rank 0)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="cp_hooks serve", description="Context-parallel diffusion over N ranks")
    limits = service.limits

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        model = VideoRequest if request.url.path.startswith("/v1/videos") else ImageRequest
        fields = [f for f in model.model_fields if f != "fault_injection" or limits.fault_injection]
        message, param = _validation_message(exc.errors(), fields)
        service.metrics.observe_request(request.url.path, 400, None)
        return _error(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.get("/health")
    async def health():
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    async def generate(path: str, request: ImageRequest):
        start = time.perf_counter()

        def answer(status: int, response):
            service.metrics.observe_request(path, status, time.perf_counter() - start)
            return response

        video = isinstance(request, VideoRequest)
        if video != service.video:
            other = "/v1/videos/generations" if service.video else "/v1/images/generations"
            return answer(
                404,
                _error(
                    404,
                    f"this service runs a {'video' if service.video else 'image'} pipeline: use {other}",
                    "invalid_request_error",
                ),
            )
        try:
            call = limits.check(request, service.defaults)
        except RequestError as exc:
            return answer(400, _error(400, str(exc), "invalid_request_error", exc.param))
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED)
        fault = request.fault_injection.model_dump() if request.fault_injection else None
        try:
            job = service.submit(call, seed, fault, "video" if video else "image")
        except ServiceUnavailable as exc:
            return answer(
                503, _error(503, f"service unavailable: {exc}", "service_unavailable", headers={"Retry-After": "5"})
            )
        except queue.Full:
            wait = service.retry_after()
            return answer(
                429,
                _error(
                    429,
                    f"the queue is full ({service._queue.maxsize} requests wait); retry in {wait} s",
                    "rate_limit_exceeded",
                    headers={"Retry-After": str(wait)},
                ),
            )
        try:
            outcome = await asyncio.wrap_future(job.future)
        except RequestFailed as exc:
            return answer(500, _error(500, f"the pipeline failed: {exc}", "server_error"))
        except ServiceUnavailable as exc:
            return answer(
                503, _error(503, f"service unavailable: {exc}", "service_unavailable", headers={"Retry-After": "5"})
            )
        if isinstance(request, VideoRequest):
            fps = request.fps
            data = await run_in_threadpool(
                lambda: [{"frames": [_png_b64(f) for f in frames], "fps": fps} for frames in outcome.output]
            )
        else:
            data = await run_in_threadpool(lambda: [{"b64_json": _png_b64(image)} for image in outcome.output])
        return answer(200, JSONResponse({"created": int(time.time()), "seed": seed, "data": data}))

    @app.post("/v1/images/generations")
    async def images(request: ImageRequest):
        return await generate("/v1/images/generations", request)

    @app.post("/v1/videos/generations")
    async def videos(request: VideoRequest):
        return await generate("/v1/videos/generations", request)

    return app

"""`python -m cp_hooks serve` over 2 CPU ranks on loopback, through real HTTP requests.

One service (torchrun, 2 ranks, Ulysses 2, tiny Flux) serves most tests and is shut down by the last of them
with SIGTERM; a second, short-lived one (tiny Wan: the video endpoint, one process per rank so that each rank's
exit status is seen) serves a video request, then has a rank killed. Every wait is bounded.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_support import (  # noqa: E402
    children,
    decode_png,
    free_port,
    post,
    reference_images,
    reference_video,
    start_ranks,
    start_torchrun,
    stop,
    tail,
    wait_healthy,
)

START_TIMEOUT = 180.0  # two ranks import torch + diffusers and build the tiny pipeline on a shared 2-core machine
SLOW = {"sleep_per_step_s": 0.4}  # fault_injection that makes a 4-step request take about 1.6 s
SLOWER = {"sleep_per_step_s": 1.0}  # 4 s: time for the test to queue requests behind it, even on a loaded machine


def assert_same_pixels(got, expected) -> None:
    """`got` (from the service) is what one process made, within fp32 rounding.

    Context parallelism equals one process within fp32 rounding (relative 1e-5: cp_hooks' own bound for the
    latents and the decoded image); scaled to 0..255 that is under 0.003 of a level, so a pixel can only round
    the other way, by 1, when its value lies within 0.003 of a rounding boundary (at most 0.6 % of them). Most
    requests come out bit-identical; anything else (a desynchronised rank, the wrong seed or size) changes
    nearly every pixel by far more.
    """
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, \
        f"max pixel difference {diff.max()}, {(diff > 0).mean():.2%} of the values differ"


class Served:
    """The running service of the module and the one-process pipeline the tests compare it with."""

    def __init__(self, port, proc, log, pipe, before_ready):
        self.port, self.proc, self.log, self.pipe = port, proc, log, pipe
        self.before_ready = before_ready  # /health answers while the ranks loaded the model
        self._references: dict = {}

    def reference(self, prompt: str, seed: int, n: int = 1, **call):
        key = (prompt, seed, n, tuple(sorted(call.items())))
        if key not in self._references:
            self._references[key] = reference_images(self.pipe, prompt, seed, n, **call)
        return self._references[key]

    def check_image(self, response, prompt: str, seed: int, n: int = 1, **call) -> None:
        """`response` is a 200 whose images are what one process makes of the request (`assert_same_pixels`)."""
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["seed"] == seed and len(body["data"]) == n
        for item, expected in zip(body["data"], self.reference(prompt, seed, n, **call)):
            got = decode_png(item["b64_json"])
            assert_same_pixels(got, expected)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text

    def health(self):
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import torch

    log = tmp_path_factory.mktemp("serve") / "torchrun.log"
    port = free_port()
    proc = start_torchrun(port, ["--fault-injection", "--max-queue", "2", "--pg-timeout", "30"], log)
    try:
        # The one-process reference pipeline is built while the service starts.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        from cp_hooks.verify.tiny_pipelines import tiny_flux_pipeline

        pipe = tiny_flux_pipeline(seed=0)
        pipe.set_progress_bar_config(disable=True)
        before_ready = []
        wait_healthy(port, [proc], START_TIMEOUT, [log], before_ready)
        yield Served(port, proc, log, pipe, before_ready)
    finally:
        torch.set_num_threads(threads)
        stop([proc], timeout=30)


def test_health_reports_ranks_and_mode(served):
    r = served.health()
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["ranks"] == 2 and body["mode"] == "ulysses=2"
    # Rank 0 serves HTTP while the ranks load: 503 until every rank has loaded and parallelized the model.
    assert served.before_ready, "no /health answer before the model was loaded"
    assert all(status == 503 and body["status"] == "loading" for status, body in served.before_ready)


def test_seeded_request_equals_one_process(served):
    served.check_image(post(served.port, {"prompt": "a red fox in the snow", "seed": 7}), "a red fox in the snow", 7)
    body = {"prompt": "a blue bird", "seed": 11, "n": 2, "size": "96x64", "num_inference_steps": 3,
            "guidance_scale": 2.5, "response_format": "b64_json"}
    served.check_image(post(served.port, body), "a blue bird", 11, 2, width=96, height=64, num_inference_steps=3,
                       guidance_scale=2.5)


BAD_REQUESTS = [
    # (JSON body, or raw bytes; the message must contain this; the field the error names)
    (b'{"prompt": "a cat", ', "not valid JSON", None),
    (b"[1, 2]", "must be a JSON object", None),
    ({"size": "128x128"}, "prompt is required", "prompt"),
    ({"prompt": "a cat", "quality": "hd"}, "unknown field 'quality'", "quality"),
    ({"prompt": "a cat", "size": "big"}, 'of the form "WIDTHxHEIGHT"', "size"),
    ({"prompt": "a cat", "size": "100x100"}, "multiple of 2, the number of context-parallel ranks", "size"),
    ({"prompt": "a cat", "size": "130x128"}, "multiples of 4", "size"),
    ({"prompt": "a cat", "size": "1024x1024"}, "at most 65536 pixels", "size"),
    ({"prompt": "a cat", "num_inference_steps": 51}, "limit of 50; ask for fewer steps", "num_inference_steps"),
    ({"prompt": "a cat", "num_inference_steps": 0}, "num_inference_steps", "num_inference_steps"),
    ({"prompt": "a cat", "n": 5}, "ask for at most 4", "n"),
    ({"prompt": "a cat", "seed": -1}, "seed", "seed"),
    ({"prompt": "a cat", "response_format": "url"}, "response_format", "response_format"),
    ({"prompt": "a cat", "guidance_scale": "high"}, "guidance_scale", "guidance_scale"),
]


@pytest.mark.parametrize("body, message, param", BAD_REQUESTS,
                         ids=[m.split()[0] + str(i) for i, (_, m, _) in enumerate(BAD_REQUESTS)])
def test_bad_request_is_refused_with_a_message(served, body, message, param):
    steps_before = _metric(served.metrics(), "cp_hooks_serve_steps_total")
    r = post(served.port, None, raw=body) if isinstance(body, bytes) else post(served.port, body)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert message in error["message"], error
    assert error["param"] == param
    assert _metric(served.metrics(), "cp_hooks_serve_steps_total") == steps_before  # nothing reached the ranks


def test_served_after_bad_requests(served):
    for body in BAD_REQUESTS[:3]:
        post(served.port, None, raw=body[0]) if isinstance(body[0], bytes) else post(served.port, body[0])
    served.check_image(post(served.port, {"prompt": "a dog on the beach", "seed": 3}), "a dog on the beach", 3)


@pytest.mark.parametrize("fault", [{"raise_on_rank": 1, "raise_at": "step", "raise_at_step": 1},
                                   {"raise_on_rank": 1, "raise_at": "prepare"},
                                   {"raise_on_rank": 0, "raise_at": "step", "raise_at_step": 3}],
                         ids=["rank1-step1", "rank1-prepare", "rank0-last-step"])
def test_exception_on_one_rank_gives_500_and_the_ranks_stay_in_step(served, fault):
    r = post(served.port, {"prompt": "a cat", "seed": 5, "fault_injection": fault})
    assert r.status_code == 500, r.text
    assert f"rank {fault['raise_on_rank']}: InjectedFault" in r.json()["error"]["message"]
    served.check_image(post(served.port, {"prompt": "a cat", "seed": 5}), "a cat", 5)
    assert served.health().status_code == 200


def test_fault_injection_field_is_refused_without_the_flag():
    from cp_hooks.serve.app import ImageRequest, Limits, RequestError

    with pytest.raises(RequestError, match="--fault-injection"):
        Limits(fault_injection=False).check(ImageRequest(prompt="a", fault_injection={"raise_on_rank": 0}), {})


@pytest.mark.parametrize("multiple, degree", [(4, 2), (16, 3), (16, 8), (8, 5)])
def test_the_suggested_size_is_one_the_service_accepts(multiple, degree):
    from cp_hooks.serve.app import Limits, RequestError

    limits = Limits(size_multiple=multiple, min_side=multiple, tokens_divisible_by=degree, max_pixels=2048 ** 2)
    example = limits.example_size()
    limits.parse_size(example)  # no RequestError
    with pytest.raises(RequestError, match=f'e.g. "{example}"'):
        limits.parse_size(f"{multiple + 1}x{multiple}")


def test_full_queue_answers_429_with_retry_after(served):
    results: dict[str, httpx.Response] = {}

    def send(name, body):
        results[name] = post(served.port, body)

    slow = threading.Thread(target=send, args=("slow", {"prompt": "a cat", "seed": 21, "fault_injection": SLOWER}))
    slow.start()
    _wait_for(lambda: served.health().json()["in_flight"] == 1, 10, "the slow request to start")
    queued = [threading.Thread(target=send, args=(f"q{i}", {"prompt": "a cat", "seed": 22 + i})) for i in range(2)]
    for t in queued:
        t.start()
    _wait_for(lambda: served.health().json()["queue_depth"] == 2, 10, "two requests to queue")
    r = post(served.port, {"prompt": "a cat", "seed": 30})
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert "queue is full" in r.json()["error"]["message"]
    for t in (slow, *queued):
        t.join(60)
    served.check_image(results["slow"], "a cat", 21)
    for i in range(2):
        served.check_image(results[f"q{i}"], "a cat", 22 + i)


def test_metrics_are_prometheus_text(served):
    text = served.metrics()
    for line in ('cp_hooks_serve_requests_total{endpoint="/v1/images/generations",status="200"}',
                 'cp_hooks_serve_requests_total{endpoint="/v1/images/generations",status="400"}',
                 'cp_hooks_serve_requests_total{endpoint="/v1/images/generations",status="500"}',
                 'cp_hooks_serve_requests_total{endpoint="/v1/images/generations",status="429"}',
                 'cp_hooks_serve_request_seconds_bucket{endpoint="/v1/images/generations",le="+Inf"}',
                 "# TYPE cp_hooks_serve_request_seconds histogram", "cp_hooks_serve_queue_depth 0"):
        assert line in text, text
    assert _metric(text, "cp_hooks_serve_steps_per_second") > 0


def test_sigterm_finishes_the_running_request_and_every_rank_exits_0(served):
    """Last test of the module: it stops the shared service. SIGTERM goes to both ranks (what torchrun does when
    it is itself terminated); torchrun exits 0 only if every rank did."""
    workers = children(served.proc.pid)
    assert len(workers) == 2, workers
    result = {}
    running = threading.Thread(target=lambda: result.update(
        r=post(served.port, {"prompt": "a cat", "seed": 41, "fault_injection": SLOWER})))
    running.start()
    _wait_for(lambda: served.health().json()["in_flight"] == 1, 10, "the request to start")
    import os

    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: served.health().status_code == 503, 10, "the service to refuse new requests")
    late = post(served.port, {"prompt": "a cat", "seed": 42})
    assert late.status_code == 503, late.text
    assert served.health().json()["in_flight"] == 1  # refused while the running request still runs
    running.join(30)
    served.check_image(result["r"], "a cat", 41)
    assert served.proc.wait(30) == 0, tail(served.log)


@pytest.fixture(scope="module")
def video_service(tmp_path_factory):
    """A second, short-lived service: the tiny video pipeline, one process per rank (each exit status is seen),
    a 5 s process-group timeout. Its last test kills a rank."""
    import torch

    logs_dir = tmp_path_factory.mktemp("serve_video")
    port = free_port()
    procs = start_ranks(port, ["--model", "tiny-wan", "--fault-injection", "--pg-timeout", "5"], logs_dir)
    logs = [logs_dir / "rank0.log", logs_dir / "rank1.log"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        from cp_hooks.verify.tiny_pipelines import tiny_wan_pipeline

        pipe = tiny_wan_pipeline(seed=0)  # the reference, built while the service starts
        pipe.set_progress_bar_config(disable=True)
        wait_healthy(port, procs, START_TIMEOUT, logs)
        yield port, procs, logs, pipe
    finally:
        torch.set_num_threads(threads)
        stop(procs, signal.SIGKILL, timeout=10)


def test_video_request_equals_one_process(video_service):
    port, _, _, pipe = video_service
    r = post(port, {"prompt": "a cat", "seed": 3, "num_frames": 5, "fps": 8}, path="/v1/videos/generations")
    assert r.status_code == 200, r.text
    (video,) = r.json()["data"]
    assert video["fps"] == 8 and len(video["frames"]) == 5
    for frame, expected in zip(video["frames"], reference_video(pipe, "a cat", 3, num_frames=5)):
        assert_same_pixels(decode_png(frame), expected)
    wrong = post(port, {"prompt": "a cat"})
    assert wrong.status_code == 404 and "/v1/videos/generations" in wrong.json()["error"]["message"]


def test_killed_rank_gives_503_and_survivors_exit_nonzero(video_service):
    port, procs, logs, _ = video_service
    result = {}
    running = threading.Thread(target=lambda: result.update(r=post(
        port, {"prompt": "a cat", "seed": 1, "num_inference_steps": 20, "fault_injection": SLOW},
        path="/v1/videos/generations")))
    running.start()
    _wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["in_flight"] == 1, 10,
              "the request to start")
    time.sleep(0.5)
    procs[1].kill()
    running.join(30)
    assert result["r"].status_code == 503, result["r"].text
    assert "a rank failed" in result["r"].json()["error"]["message"]
    after = post(port, {"prompt": "a cat", "seed": 2}, timeout=10, path="/v1/videos/generations")
    assert after.status_code == 503
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 503
    assert procs[0].wait(30) == 1, "\n".join(tail(log) for log in logs)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")

"""Prometheus metrics of the service, written in the text exposition format (version 0.0.4) by hand.

Hand-written rather than `prometheus_client` so that the service adds no dependency and keeps its metrics in
one object per service (no process-global registry that two services in one test process would share). Every
method takes a lock: the HTTP thread and the worker loop update the same counters.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

# Request latency buckets, in seconds: from a tiny model on CPUs (tens of milliseconds) to a large one (minutes).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The service's counters, histogram and gauges; `render()` gives the `/metrics` text.

    Args:
        queue_depth: returns the requests waiting in the queue now (read at each scrape).
        in_flight: returns the requests running on the ranks now (0 or 1).
    """

    def __init__(self, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._queue_depth = queue_depth
        self._in_flight = in_flight
        self._requests: dict[tuple[str, str], int] = defaultdict(int)  # (endpoint, HTTP status) -> count
        self._buckets: dict[str, list[int]] = {}  # endpoint -> count per bucket (not cumulative)
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)
        self._steps = 0
        self._pipeline_seconds = 0.0
        self._last_steps_per_second = 0.0
        self._images = 0

    def observe_request(self, endpoint: str, status: int, seconds: float | None) -> None:
        """Count one answered request and, for the latency histogram, how long it took from arrival to answer
        (None: not timed, e.g. a body refused by the schema before the handler ran)."""
        with self._lock:
            self._requests[(endpoint, str(status))] += 1
            if seconds is None:
                return
            buckets = self._buckets.setdefault(endpoint, [0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sum[endpoint] += seconds
            self._count[endpoint] += 1

    def observe_generation(self, steps: int, seconds: float, images: int) -> None:
        """Count one pipeline call that succeeded: its denoising steps, its time on the ranks, its images."""
        with self._lock:
            self._steps += steps
            self._pipeline_seconds += seconds
            self._images += images
            if seconds > 0:
                self._last_steps_per_second = steps / seconds

    def render(self) -> str:
        """The metrics in Prometheus' text format."""
        out: list[str] = []

        def header(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            header("cp_hooks_serve_requests_total", "counter", "HTTP requests answered, by endpoint and status code.")
            for (endpoint, status), n in sorted(self._requests.items()):
                out.append(f'cp_hooks_serve_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            header(
                "cp_hooks_serve_request_seconds",
                "histogram",
                "Time from a generation request's arrival to its answer (queueing included).",
            )
            for endpoint, buckets in sorted(self._buckets.items()):
                cumulative = 0
                for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f'cp_hooks_serve_request_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {cumulative}')
                out.append(f'cp_hooks_serve_request_seconds_sum{{endpoint="{endpoint}"}} {self._sum[endpoint]!r}')
                out.append(f'cp_hooks_serve_request_seconds_count{{endpoint="{endpoint}"}} {self._count[endpoint]}')
            header("cp_hooks_serve_queue_depth", "gauge", "Requests waiting for the ranks.")
            out.append(f"cp_hooks_serve_queue_depth {self._queue_depth()}")
            header("cp_hooks_serve_in_flight", "gauge", "Requests running on the ranks.")
            out.append(f"cp_hooks_serve_in_flight {self._in_flight()}")
            header("cp_hooks_serve_steps_total", "counter", "Denoising steps of successful requests.")
            out.append(f"cp_hooks_serve_steps_total {self._steps}")
            header(
                "cp_hooks_serve_pipeline_seconds_total",
                "counter",
                "Seconds the ranks spent in successful pipeline calls (steps_total / this = mean steps per second).",
            )
            out.append(f"cp_hooks_serve_pipeline_seconds_total {self._pipeline_seconds!r}")
            header(
                "cp_hooks_serve_steps_per_second", "gauge", "Denoising steps per second of the last successful request."
            )
            out.append(f"cp_hooks_serve_steps_per_second {self._last_steps_per_second!r}")
            header("cp_hooks_serve_images_total", "counter", "Images (or videos) generated.")
            out.append(f"cp_hooks_serve_images_total {self._images}")
        return "\n".join(out) + "\n"

"""A small Python-level tracer for the own-time measurement: every Python call and builtin call on this thread.

torch's profiler with `with_stack=True` (its C++ Python tracer) crashed a benchmark rank with SIGSEGV on
a CI machine, once, while stopping or exporting a profile; it never did here, and nothing in cp_hooks can
prevent it. `measure.framework_overhead` only needs the call tree of one thread with times, so it uses this
tracer instead: `sys.setprofile` on the calling thread only, no C++ extension, no other threads touched.

Events use the names and categories of torch's Chrome trace, so `measure.classify` and
`measure.attribute_time` read both: a Python function is `"path(line): name"` in category
"python_function", a builtin is `"<built-in method name>"`, and a call of a torch operator (a function of
`torch._C` such as `F.scaled_dot_product_attention`, or an `OpOverload` / `OpOverloadPacket` such as the CPU
flash-attention kernel) is also recorded as a "cpu_op" span named `"ns::op"`, as the profiler names the operator.

The tracer's own work (one Python callback per call and return) is charged to whichever span is open, so
Python-heavy code is slowed more than kernels are: the shares it gives are upper bounds, like the profiler's.
"""

from __future__ import annotations

import sys
import threading
import time

_TID = "main"


class PythonTracer:
    """Record every call on the current thread between `start()` and `stop()`; `events()` gives trace spans.

    Example:
        >>> tracer = PythonTracer()
        >>> tracer.start(); forward(); tracer.stop()
        >>> spans = tracer.events()   # [{"name", "cat", "ts", "dur", "tid", "ph": "X"}, ...] in microseconds
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, str, str | None]] = []  # (start ns, name, operator name or None)
        self._spans: list[dict] = []
        self._thread = None

    def start(self) -> None:
        self._thread = threading.get_ident()
        self._stack.clear()
        self._spans.clear()
        sys.setprofile(self._on_event)

    def stop(self) -> None:
        sys.setprofile(None)
        end = time.perf_counter_ns()
        while self._stack:  # frames still open when stop() was called (stop's caller and above)
            self._close(end)

    def events(self) -> list[dict]:
        """The recorded spans, sorted by start time."""
        return sorted(self._spans, key=lambda e: (e["ts"], -e["dur"]))

    # ------------------------------------------------------------------------------------------------
    def _on_event(self, frame, event: str, arg) -> None:
        now = time.perf_counter_ns()
        if event == "call":
            code = frame.f_code
            self._stack.append((now, f"{code.co_filename}({code.co_firstlineno}): {code.co_name}",
                                _operator_name(frame, code)))
        elif event == "c_call":
            name = getattr(arg, "__name__", "?")
            # torch's functions (F.scaled_dot_product_attention is torch._C._nn's) are operators too.
            operator = f"aten::{name}" if str(getattr(arg, "__module__", "")).startswith("torch._C") else None
            self._stack.append((now, f"<built-in method {name}>", operator))
        elif event in ("return", "c_return", "c_exception") and self._stack:
            self._close(now)

    def _close(self, end: int) -> None:
        start, name, operator = self._stack.pop()
        ts, dur = start / 1e3, (end - start) / 1e3
        self._spans.append(dict(ph="X", cat="python_function", name=name, ts=ts, dur=dur, tid=_TID))
        if operator is not None:
            # Inside the Python call, as the profiler's cpu_op sits inside the Python frame that dispatched it.
            self._spans.append(dict(ph="X", cat="cpu_op", name=operator, ts=ts, dur=dur, tid=_TID))


def _operator_name(frame, code) -> str | None:
    # A torch operator called from Python enters OpOverload(Packet).__call__ in torch/_ops.py; its `self`
    # names the operator. Only those frames pay for the locals lookup.
    if code.co_name != "__call__" or not code.co_filename.endswith("torch/_ops.py"):
        return None
    op = frame.f_locals.get("self")
    name = getattr(op, "_name", None) or getattr(op, "__name__", None)
    if not isinstance(name, str):
        return None
    # "aten::_scaled_dot_product_flash_attention_for_cpu", whether called as a packet or an overload.
    return name if "::" in name else name.split(".")[0].replace(".", "::")


def main_thread_id() -> str:
    """The `tid` every span of this tracer carries (it traces one thread)."""
    return _TID

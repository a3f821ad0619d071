"""Which attention calls are context-parallel: a per-thread marker of where the current call comes from.

Interceptors (the diffusers dispatch swap, the SDPA function mode) consult it so that the local attention
that cp_hooks itself runs, and attention inside modules marked `LocalAttention`, are never redirected.
"""

from __future__ import annotations

import contextlib
import threading

class _State(threading.local):
    def __init__(self) -> None:
        # Set in every thread before any use: a compiled graph guards on the attribute, and one that appeared
        # only after the first call would recompile the graph.
        self.local_depth = 0


_state = _State()


def _depth() -> int:
    return _state.local_depth


def enter_local() -> None:
    """Attention calls from here to `exit_local()` run locally (a module marked LocalAttention)."""
    _state.local_depth += 1


def exit_local() -> None:
    """Ends one `enter_local()`."""
    _state.local_depth -= 1


@contextlib.contextmanager
def inside_cp_kernel():
    """Attention calls inside this block run locally (used by cp_hooks' own kernels and local modules)."""
    enter_local()
    try:
        yield
    finally:
        exit_local()


run_locally = inside_cp_kernel


def is_local() -> bool:
    """True inside `inside_cp_kernel()` / `run_locally()`."""
    return _depth() > 0

"""`python -m cp_hooks serve`: an HTTP image / video generation service over N context-parallel ranks.

Rank 0 serves HTTP (FastAPI + uvicorn), validates every request, queues it, and broadcasts it over a side gloo
group; every rank runs it, and all agree on its outcome (see `cp_hooks.serve.worker`). docs/serve.md has the
API, the launch commands and the failure semantics. Needs the `serve` extra: `pip install "cp_hooks[serve]"`.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the service on this rank (`python -m cp_hooks serve ARGS`); returns the exit status."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        import sys

        print(f'cp_hooks serve needs FastAPI and uvicorn ({exc}): pip install "cp_hooks[serve]"', file=sys.stderr)
        return 2
    from cp_hooks.serve.cli import main as serve_main

    return serve_main(argv)


__all__ = ["main"]

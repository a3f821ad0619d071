"""`python -m cp_hooks check MODEL_CLASS ...` (the plan checker), `python -m cp_hooks table` (the models table of
docs/models.md) and `python -m cp_hooks serve` (the HTTP generation service, docs/serve.md)."""

from __future__ import annotations

import sys

USAGE = """usage:
  torchrun --nproc_per_node N -m cp_hooks check MODEL_CLASS [--ring R] [--ulysses U] [--config JSON] [--anything]
                                                            [--case NAME] [--plan MODULE:NAME]
  python -m cp_hooks table [--readme docs/models.md]   print (or rewrite in docs/models.md) the supported-models section
  torchrun --nproc_per_node N -m cp_hooks serve [--model M] [--port P] [--ulysses-degree U] ...   HTTP service
                                                            (docs/serve.md; `serve --help` for every option)"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "check":
        from cp_hooks.verify.checker import main as check

        return check(rest)
    if command == "serve":
        from cp_hooks.serve import main as serve

        return serve(rest)
    if command == "table":
        from cp_hooks.verify.catalogue.table import models_section, update_readme

        if rest[:1] == ["--readme"] and len(rest) == 2:
            update_readme(rest[1])
        else:
            print(models_section(), end="")
        return 0
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Resolve plan module names (with `*` wildcards) to the modules of a model."""

from __future__ import annotations

import difflib

import torch.nn as nn


def resolve_modules(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """The (full name, module) pairs that `name` denotes in `model`.

    `""` is the model itself; `*` matches every child of a container (`ModuleList`, `Sequential`,
    `ModuleDict`) at that position, e.g. "blocks.*.attn"; a negative index counts from the end of a
    `ModuleList` / `Sequential`, e.g. "blocks.-1" is the last block whatever the model's depth (the place to
    gather in a model whose `forward` slices the whole sequence after its last block). The returned full
    name is the real one ("blocks.39").

    Raises:
        ValueError: a name part that does not exist, with the closest existing module names.
    """
    if name == "":
        return [("", model)]
    matches = [("", model)]
    for part in name.split("."):
        found: list[tuple[str, nn.Module]] = []
        for prefix, module in matches:
            if part == "*":
                if not isinstance(module, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
                    raise ValueError(
                        f"Plan name {name!r}: '*' must follow a ModuleList/Sequential/ModuleDict, but "
                        f"'{prefix or '<model>'}' is a {type(module).__name__}."
                    )
                found.extend((_join(prefix, child_name), child) for child_name, child in module.named_children())
            elif _is_negative_index(part) and isinstance(module, (nn.ModuleList, nn.Sequential)):
                index = len(module) + int(part)
                if index < 0:
                    raise ValueError(f"Plan name {name!r}: '{prefix or '<model>'}' has only {len(module)} children.")
                found.append((_join(prefix, str(index)), module[index]))
            else:
                child = module._modules.get(part)
                if child is None:
                    raise _missing(model, name, _join(prefix, part))
                found.append((_join(prefix, part), child))
        matches = found
    if not matches:
        raise ValueError(f"Plan name {name!r} matches no module of {type(model).__name__} (an empty container?).")
    return matches


def _is_negative_index(part: str) -> bool:
    return part.startswith("-") and part[1:].isdigit()


def _join(prefix: str, part: str) -> str:
    return f"{prefix}.{part}" if prefix else part


def _missing(model: nn.Module, name: str, missing: str) -> ValueError:
    """The error for a plan name whose part `missing` is no module of `model`, with the closest names."""
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(missing, names, n=3, cutoff=0.5)
    hint = f" Closest module names: {', '.join(map(repr, close))}." if close else ""
    return ValueError(f"The plan names module {name!r}, but {type(model).__name__} has no module '{missing}'.{hint}")

"""The one walker of nested inputs and outputs: tensors inside tuples, lists, dicts and diffusers' outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def map_tensors(value, fn: Callable[[torch.Tensor], torch.Tensor]):
    """`value` with `fn` applied to every tensor in it (tensors, tuples / lists / namedtuples, dicts, and
    diffusers' `BaseOutput`, an OrderedDict whose fields are also attributes: changed in place)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        items = [map_tensors(v, fn) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # namedtuple or not
    if isinstance(value, dict):
        for key in list(value.keys()):
            value[key] = map_tensors(value[key], fn)
        return value
    return value


def iter_tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor in `value`, in the order `map_tensors` visits them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_tensors(item)


def has_tensor(value) -> bool:
    """True when `value` holds a tensor anywhere."""
    return next(iter_tensors(value), None) is not None

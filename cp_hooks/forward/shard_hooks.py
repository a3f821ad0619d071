"""The hooks a plan installs: split inputs/outputs into this rank's shard, gather outputs back.

Each hook touches exactly one module. Parameter names are resolved against the module's forward
signature once, at enable time; tensors are checked against `expected_dims` on every call (a mismatch is
an error, never a silent skip: a skipped split gives a wrong result, not a crash).
"""

from __future__ import annotations

import difflib
import inspect

import torch
import torch.nn as nn

from cp_hooks import comm
from cp_hooks.forward import length_memo, value_checks
from cp_hooks.forward.context import groups_compute_different_calls
from cp_hooks.forward.hooks import ModelHook
from cp_hooks.forward.length_memo import conform
from cp_hooks.forward.sharding import gather_tensor, share_replicated_gradient, split_tensor
from cp_hooks.forward.tree import map_tensors
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput
from cp_hooks.runtime import ContextParallelRuntime


def _check_dims(x: torch.Tensor, spec, what: str) -> None:
    if spec.expected_dims is not None and x.dim() != spec.expected_dims:
        raise ValueError(
            f"{what} has {x.dim()} dims (shape {tuple(x.shape)}), but the plan expects {spec.expected_dims}. "
            "Fix the plan's expected_dims (or the input): splitting the wrong dim would silently give a wrong result."
        )


def split_for_plan(
    x: torch.Tensor, spec: ContextParallelInput, runtime: ContextParallelRuntime, what: str
) -> torch.Tensor:
    """This rank's shard of `x` as `spec` says, after checking dims and divisibility."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} is a {type(x).__name__}, but the plan splits it as a tensor.")
    if spec.skip_other_dims and spec.expected_dims is not None and x.dim() != spec.expected_dims:
        return x
    _check_dims(x, spec, what)
    dim = spec.split_dim % x.dim()
    if spec.segments is not None:
        return _split_segments(x, dim, spec.segments, runtime, what)
    length = x.shape[dim]
    _check_length(length, runtime, what, f"along dim {dim}")
    if spec.tag is not None:
        runtime.split_lengths.record_named(spec.tag, length)
    return split_tensor(x, dim, runtime.rank, runtime.world_size)


def _check_length(length: int, runtime: ContextParallelRuntime, what: str, where: str) -> None:
    """Refuse a length the ranks cannot split evenly outside the anything modes; record it inside them.

    The message is formatted only on failure: formatting a symbolic length (torch.compile with dynamic
    shapes) would specialise the graph to it.
    """
    if length % runtime.world_size and not runtime.anything:
        raise ValueError(
            f"{what} has length {length} {where}, not divisible by the {runtime.world_size} context-parallel ranks. "
            "Set ContextParallelConfig(ulysses_anything=True) (Ulysses) or ring_anything=True (ring) to allow "
            "uneven shards, or pad the input."
        )
    # In the anything modes a length below the rank count leaves some ranks with empty shards; they still
    # take part in every collective, and attention handles empty shards exactly.
    if runtime.anything:
        runtime.split_lengths.record(length)  # compiled graphs read every rank's length from it (lengths.py)


def _split_segments(x: torch.Tensor, dim: int, segments: tuple, runtime: ContextParallelRuntime, what: str):
    """[this rank's piece of each stream] of a tensor holding several token streams back to back.

    Each stream's full length is the one its tagged split recorded in this forward, so every rank cuts the
    same streams; a None stream is already local and kept whole (its length is what the others leave).
    """
    named = runtime.split_lengths.named
    missing = [tag for tag in segments if tag is not None and tag not in named]
    if missing:
        raise ValueError(
            f"{what} is split by segments {segments}, but no split tagged {missing} ran earlier in this forward "
            f"(tagged so far: {sorted(named)}). Tag the streams' own splits, ContextParallelInput(..., tag=...), "
            "at modules that run before this one."
        )
    total = x.shape[dim]
    known = sum(named[tag] for tag in segments if tag is not None)
    lengths = [named[tag] if tag is not None else total - known for tag in segments]
    if min(lengths) < 0 or sum(lengths) != total:
        raise ValueError(
            f"{what} has length {total} along dim {dim}, but its segments {segments} have lengths "
            f"{[named[t] if t is not None else '?' for t in segments]} in this forward, which do not add up to it."
        )
    pieces = []
    for tag, piece in zip(segments, x.split(lengths, dim=dim)):
        if tag is None:
            pieces.append(piece)
            continue
        _check_length(piece.shape[dim], runtime, f"{what}: its segment {tag!r}", f"along dim {dim}")
        pieces.append(split_tensor(piece, dim, runtime.rank, runtime.world_size))
    return torch.cat(pieces, dim=dim)


def gather_for_plan(
    x: torch.Tensor, spec: ContextParallelOutput, runtime: ContextParallelRuntime, what: str
) -> torch.Tensor:
    """The full tensor, gathered from every rank's shard along `spec.gather_dim`, after checking dims."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} is a {type(x).__name__}, but the plan gathers it as a tensor.")
    _check_dims(x, spec, what)
    dim = spec.gather_dim % x.dim()
    sizes = None
    if runtime.anything and torch.compiler.is_compiling():  # a compiled graph reads them from the plan's splits
        sizes = runtime.split_lengths.sizes(x.shape[dim], runtime.world_size, runtime.rank)
    elif runtime.anything:  # eager code exchanges them once per call position and input shape
        local = x.shape[dim]
        sizes = runtime.length_memo.lengths(
            (local,),
            runtime.split_lengths.state(),
            runtime.rank,
            lambda: comm.exchange_sizes([local], runtime.flat_group, x.device),
        )[0]
        x = conform(x, sizes[runtime.rank], dim)  # unchanged unless a length mismatch was recorded (length_memo)
    return gather_tensor(
        x,
        dim,
        runtime.flat_group,
        runtime.world_size,
        uneven=runtime.anything,
        sizes=sizes,
        group_key=runtime.flat_group_key,
    )


class SplitHook(ModelHook):
    """Split the named forward inputs (before the forward) and the indexed outputs (after it).

    An input whose spec is a `ContextParallelOutput` is gathered instead (a module that needs it whole).
    """

    def __init__(
        self, module: nn.Module, module_name: str, specs: dict, runtime: ContextParallelRuntime | None = None
    ) -> None:
        self.runtime = runtime
        self.module_name = module_name or "<model>"
        # Segmented splits last: they read the lengths that this entry's tagged splits record.
        named = sorted((k for k in specs if isinstance(k, str)), key=lambda k: _has_segments(specs[k]))
        self.input_specs = {k: specs[k] for k in named}
        self.output_specs = {k: s for k, s in specs.items() if isinstance(k, int)}
        self.positions = _parameter_positions(module, module_name, list(self.input_specs))

    def pre_forward(self, module, args, kwargs):
        args = list(args)
        for name, spec in self.input_specs.items():
            position = self.positions[name]
            if name in kwargs:
                kwargs[name] = self._split_value(kwargs[name], spec, name)
            elif position is not None and position < len(args):
                args[position] = self._split_value(args[position], spec, name)
            # else: an optional parameter the caller did not pass; nothing to split.
        return tuple(args), kwargs

    def post_forward(self, module, output):
        if not self.output_specs:
            return output
        single = isinstance(output, torch.Tensor)
        items = [output] if single else list(output)
        for index, spec in self.output_specs.items():
            if index >= len(items):
                raise ValueError(
                    f"The plan splits output {index} of '{self.module_name}', which returns {len(items)} output(s)."
                )
            items[index] = self._split_value(items[index], spec, index)
        return items[0] if single else type(output)(items)

    def _split_value(self, value, spec, key):
        what = f"'{self.module_name}' {'input' if isinstance(key, str) else 'output'} {key!r}"
        if value is None:
            return None
        if isinstance(spec, ContextParallelOutput):
            return gather_for_plan(value, spec, self.runtime, what)
        return _apply_spec(value, spec, self.runtime, what)


def _has_segments(spec) -> bool:
    if isinstance(spec, (list, tuple)):
        return any(_has_segments(s) for s in spec)
    if isinstance(spec, dict):
        return any(_has_segments(s) for s in spec.values())
    return isinstance(spec, ContextParallelInput) and spec.segments is not None


def _apply_spec(value, spec, runtime: ContextParallelRuntime, what: str):
    """Split (or gather) `value` as `spec` says, recursing into lists, tuples and dicts of specs."""
    if value is None or spec is None:
        return value
    if isinstance(spec, ContextParallelOutput):
        return gather_for_plan(value, spec, runtime, what)
    if isinstance(spec, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(spec):
            raise ValueError(
                f"{what}: the plan has {len(spec)} specs but the value is {type(value).__name__}"
                f"{'' if not isinstance(value, (list, tuple)) else f' of length {len(value)}'}."
            )
        return type(value)(_apply_spec(v, s, runtime, f"{what}[{i}]") for i, (v, s) in enumerate(zip(value, spec)))
    if isinstance(spec, dict):
        if not isinstance(value, dict) or not set(spec) <= set(value):
            raise ValueError(
                f"{what}: the plan has specs for keys {sorted(spec)} but the value is "
                f"{type(value).__name__}{f' with keys {sorted(value)}' if isinstance(value, dict) else ''}."
            )
        return {k: _apply_spec(v, spec.get(k), runtime, f"{what}[{k!r}]") for k, v in value.items()}
    return split_for_plan(value, spec, runtime, what)


class GatherHook(ModelHook):
    """Gather the module's output(s) along the sequence so every rank holds the full tensor."""

    def __init__(self, module_name: str, specs, runtime: ContextParallelRuntime | None = None) -> None:
        self.runtime = runtime
        self.module_name = module_name or "<model>"
        self.specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]

    def post_forward(self, module, output):
        single = isinstance(output, torch.Tensor)
        items = [output] if single else list(output) if isinstance(output, (list, tuple)) else None
        if items is None:
            raise TypeError(
                f"'{self.module_name}' returned {type(output).__name__}; the plan gathers tensors or tuples of them."
            )
        if len(items) < len(self.specs):
            raise ValueError(
                f"The plan gathers {len(self.specs)} output(s) of '{self.module_name}', which returned {len(items)}."
            )
        for i, spec in enumerate(self.specs):
            if spec is not None:
                items[i] = gather_for_plan(items[i], spec, self.runtime, f"'{self.module_name}' output {i}")
        return items[0] if single else type(output)(items)


class ReplicatedOutputHook(ModelHook):
    """On the model itself: every rank returns the same full output, so each takes 1/N of its gradient.

    Also starts each forward's record of split lengths (`cp_hooks.lengths`), and brackets the forward's
    checks of mask values (`cp_hooks.value_checks`) and, in the anything modes, its remembered per-call
    lengths (`cp_hooks.length_memo`).

    Each of the N ranks back-propagates the same loss; without this, layers after the plan's final gather
    (which run replicated) would end with N times their gradient after `reduce_gradients`. See
    `cp_hooks.sharding` for the whole gradient convention. Costs nothing at inference (no autograd).
    """

    def __init__(self, runtime: ContextParallelRuntime | None = None) -> None:
        self.runtime = runtime
        # the value checks of the forward that just ended (cp_hooks.value_checks)
        self._checks: value_checks._Forward | None = None
        self._signature: tuple | None = None  # the input shapes of the forward about to run (cp_hooks.length_memo)
        self._memo_owner = object()  # this enabling of the model, in the signatures of its forwards
        self._ended: tuple | None = None  # the signature of the forward that just ended, for its post_forward

    def pre_forward(self, module, args, kwargs):
        self.runtime.split_lengths.reset()  # a new forward: its splits are recorded afresh
        if not torch.compiler.is_compiling() and self.runtime.anything:
            self._signature = length_memo.signature(self._memo_owner, args, kwargs)
        return args, kwargs

    def _bound_runtime(self) -> ContextParallelRuntime:
        assert self.runtime is not None  # enable_parallelism binds the runtime before installing the hook
        return self.runtime

    def enter(self, module) -> None:
        value_checks.begin_forward(self)
        if not torch.compiler.is_compiling():
            signature, self._signature = self._signature, None
            self._bound_runtime().length_memo.begin(signature)

    def exit(self, module) -> None:
        # Also when the forward raised: its checks stop collecting (a later direct attention call refuses at once).
        self._checks = value_checks.end_forward(self)
        if not torch.compiler.is_compiling():
            self._ended = self._bound_runtime().length_memo.end()

    def post_forward(self, module, output):
        if not torch.compiler.is_compiling():  # a compiled forward defers no check (value_checks, length_memo)
            self._agree()
        # Every rank of every cfg group back-propagates the same loss from the same whole output.
        return map_tensors(output, lambda t: share_replicated_gradient(t, self.runtime.total_ranks))

    def _agree(self) -> None:
        """A check that failed on some rank raises on every rank, now that no collective is pending. When the
        cfg groups computed different calls, whether a check ran can differ between them: they always agree."""
        checks, self._checks = self._checks, None
        signature, self._ended = self._ended, None
        runtime = self._bound_runtime()
        try:
            value_checks.agree(
                checks, runtime.world_group, runtime.device_type, always=groups_compute_different_calls()
            )
        except value_checks.ValueCheckError as error:
            if length_memo.MISMATCH_KIND in error.kinds:
                runtime.length_memo.forget(signature)  # on every rank: they all raise here
            raise


def _parameter_positions(module: nn.Module, module_name: str, names: list[str]) -> dict[str, int | None]:
    """Positional index of each named forward parameter (None if keyword-only); errors name close matches."""
    signature = inspect.signature(module.forward)
    params = list(signature.parameters.values())
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    positions: dict[str, int | None] = {}
    for name in names:
        found = next((i for i, p in enumerate(params) if p.name == name), None)
        if found is None:
            if accepts_kwargs:
                positions[name] = None
                continue
            close = difflib.get_close_matches(name, [p.name for p in params], n=3)
            raise ValueError(
                f"The plan splits parameter {name!r} of '{module_name or '<model>'}' ({type(module).__name__}), "
                "whose forward has no such parameter. "
                f"{'Did you mean ' + ', '.join(map(repr, close)) + '? ' if close else ''}"
                f"Parameters: {[p.name for p in params]}."
            )
        kind = params[found].kind
        positions[name] = (
            found if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) else None
        )
    return positions

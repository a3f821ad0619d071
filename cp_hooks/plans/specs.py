"""Plan specs (`ContextParallelInput`, `ContextParallelOutput`, `LocalAttention`, `ContextParallelProcessor`,
`UnsupportedConfig`), the declaration a model family makes (`PlanDeclaration`) and `normalize_plan`.

The registry that maps a model class to its declaration is `cp_hooks.plans.registry`; the built-in
declarations live one family per file, `cp_hooks.plans.<family>`.

A plan is plain data: a dict from module names to what happens at that module.

    {
        "": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},   # split a forward input
        "rope": {0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)},  # split output 0
        "blocks.*.attn2": LocalAttention(),                # attention here runs locally (replicated keys)
        "blocks.*.attn1": ContextParallelProcessor(make),  # a processor of the plan's own while enabled
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),                   # gather the output
    }

A `ContextParallelOutput` keyed by a parameter name inside an input dict gathers that (already split)
input back to full length before the module runs: for a module that needs the whole sequence while the
rest of the model works on shards (HunyuanVideo's token refiner needs the whole text and its mask, which
the blocks need split).

Names are dotted module paths (`""` is the model itself); `*` stands for every child of a `ModuleList` or
`Sequential`. diffusers' spec objects of the same names are accepted and converted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContextParallelInput:
    """Split a tensor along `split_dim` so that rank r keeps piece r of `tensor.tensor_split(world, dim)`.

    Args:
        split_dim: dimension holding the sequence.
        expected_dims: the tensor's number of dimensions; a tensor with another number is an error.
        split_output: split the module's output (key = output index) instead of an input (key = parameter
            name). Use it for positional embeddings computed from the full sequence.
        skip_other_dims: leave a tensor whose number of dims differs from `expected_dims` whole instead of
            raising. Only for inputs that carry the sequence in some variants of a model and not in others
            (Wan 2.2 TI2V's per-token timestep (B, S) vs. the usual (B,)); never needed otherwise.
        tag: a name under which this split records the full length it cut, for `segments` later in the same
            forward (e.g. `"image"` on the image tokens' split).
        segments: split a tensor that holds several token streams back to back, each stream like its own
            tokens: the tags of earlier splits, in order, whose full lengths are the streams' lengths along
            `split_dim`. Rank r keeps [its piece of stream 1, its piece of stream 2, ...], which is how a
            block concatenates its local image and text shards. One entry may be None: a stream that is
            already local (kept whole), its length being what the tagged streams leave. Use it for a key mask
            or rotary table built over [image, text] in `forward` and handed whole to every block.

    Example:
        >>> tokens = ContextParallelInput(split_dim=1, expected_dims=3)
        >>> tokens.split_output, tokens.tag
        (False, None)
        >>> key_mask = ContextParallelInput(split_dim=3, expected_dims=4, segments=("image", "text"))
    """

    split_dim: int
    expected_dims: int | None = None
    split_output: bool = False
    skip_other_dims: bool = False
    tag: str | None = None
    segments: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.segments is not None:
            if (
                not isinstance(self.segments, tuple)
                or not self.segments
                or not all(s is None or isinstance(s, str) for s in self.segments)
            ):
                raise TypeError(
                    f"ContextParallelInput(segments=...) takes a non-empty tuple of tags (str) and at "
                    f"most one None, got {self.segments!r}."
                )
            if list(self.segments).count(None) > 1:
                raise ValueError(
                    f"ContextParallelInput(segments={self.segments!r}) has more than one None: the "
                    "length of a stream kept whole is what the tagged streams leave, so only one can be."
                )
            if self.tag is not None:
                raise ValueError("A ContextParallelInput with segments cannot also be tagged: tag the streams' splits.")


@dataclass(frozen=True)
class ContextParallelOutput:
    """Gather an output tensor along `gather_dim` so that every rank holds the full sequence again.

    Args:
        gather_dim: dimension holding the sequence.
        expected_dims: the tensor's number of dimensions; a tensor with another number is an error.

    Example:
        >>> ContextParallelOutput(gather_dim=1, expected_dims=3)
        ContextParallelOutput(gather_dim=1, expected_dims=3)
    """

    gather_dim: int
    expected_dims: int | None = None


@dataclass(frozen=True)
class LocalAttention:
    """Mark a module whose attention calls must run locally, with no communication.

    Use it for cross-attention whose keys and values are replicated on every rank (e.g. a text context
    that is not split) in models that call `torch.nn.functional.scaled_dot_product_attention` directly.
    diffusers processors that pass `parallel_config=None` for such calls need no marking.

    Example:
        >>> plan = {"blocks.*.cross_attn": LocalAttention()}
    """


@dataclass(frozen=True)
class ContextParallelProcessor:
    """Give an attention module a processor of the plan's making while context parallelism is enabled.

    For attention that no split of its inputs can serve: a processor that slices queries or keys at absolute
    positions of the whole sequence, or keeps a cache written by position. `factory(module, processor,
    runtime)` returns the replacement, which computes the same attention from this rank's shards (through
    `context_parallel_attention`); `disable_parallelism` puts `processor` back. A forward after the
    replacement was swapped out (`set_attn_processor`, an adapter) raises on every rank.

    Example:
        >>> plan = {"transformer_blocks.*.attn": ContextParallelProcessor(MyContextParallelProcessor)}
    """

    factory: Callable[..., Any]


@dataclass(frozen=True)
class UnsupportedConfig:
    """A model configuration that a registered plan cannot serve: `enable_parallelism` refuses it.

    Some configurations make a module depend on where the whole sequence starts or ends through a plain
    int (a count of history or first-frame tokens) that no split can shift to each rank's shard. Declaring
    them turns a silently wrong result into an error, raised on every rank before any communication.

    Args:
        module: the module(s) holding the attribute, as in plan keys (`""` is the model, `*` allowed).
        attribute: a dotted attribute path on that module, e.g. `"is_amplify_history"` or
            `"config.image_condition_type"`.
        values: the attribute values the plan cannot serve.
        reason: why, for the error message.

    Example:
        >>> UnsupportedConfig("blocks.*.attn1", "is_amplify_history", (True,), "the history length is an int")
    """

    module: str
    attribute: str
    values: tuple
    reason: str


InputPlan = dict[str | int, ContextParallelInput | list | tuple]
OutputPlan = ContextParallelOutput | list | tuple
ModulePlan = InputPlan | OutputPlan | LocalAttention | ContextParallelProcessor
Plan = dict[str, ModulePlan]


def _convert_spec(spec: Any, where: str):
    """Accept our specs, diffusers' specs (same fields), None placeholders, and lists/tuples/dicts of them,
    nested as deep as the value they describe (a tuple of (cos, sin) tuples, a dict of tables)."""
    if spec is None or isinstance(
        spec, (ContextParallelInput, ContextParallelOutput, LocalAttention, ContextParallelProcessor)
    ):
        return spec
    if isinstance(spec, (list, tuple)):
        return type(spec)(_convert_spec(s, where) for s in spec)
    if isinstance(spec, dict) and where.count("[") > 1:  # inside an input entry: a dict value's specs by key
        return {k: _convert_spec(s, f"{where}[{k!r}]") for k, s in spec.items()}
    kind = type(spec).__name__
    if kind == "ContextParallelInput" and hasattr(spec, "split_dim"):
        return ContextParallelInput(spec.split_dim, spec.expected_dims, bool(spec.split_output))
    if kind == "ContextParallelOutput" and hasattr(spec, "gather_dim"):
        return ContextParallelOutput(spec.gather_dim, spec.expected_dims)
    raise TypeError(
        f"Plan entry {where} is a {kind}; expected ContextParallelInput, ContextParallelOutput, LocalAttention, "
        "or a list/tuple of them."
    )


def normalize_plan(plan: Any) -> Plan:
    """Return a copy of `plan` with every spec converted to cp_hooks' types, checking its structure.

    Raises:
        TypeError: the plan is not a dict of module name -> spec, or holds an unknown spec type.
        ValueError: an input key whose `split_output` does not match its kind (name vs. output index).
    """
    if not isinstance(plan, dict):
        raise TypeError(f"A plan must be a dict of module name -> spec, got {type(plan).__name__}.")
    result: Plan = {}
    for module_name, entry in plan.items():
        if not isinstance(module_name, str):
            raise TypeError(f"Plan keys are module names (str, '' for the model itself); got {module_name!r}.")
        if isinstance(entry, dict):
            inputs = {}
            for key, spec in entry.items():
                spec = _convert_spec(spec, f"[{module_name!r}][{key!r}]")
                _check_input_key(module_name, key, spec)
                inputs[key] = spec
            result[module_name] = inputs
        else:
            spec = _convert_spec(entry, f"[{module_name!r}]")
            specs = spec if isinstance(spec, (list, tuple)) else [spec]
            if isinstance(spec, (LocalAttention, ContextParallelProcessor)):
                result[module_name] = spec
                continue
            if not all(s is None or isinstance(s, ContextParallelOutput) for s in specs):
                raise TypeError(
                    f"Plan entry [{module_name!r}] must be a dict of inputs, a ContextParallelOutput (or a list of "
                    "them, one per output, None to skip one) or LocalAttention()."
                )
            result[module_name] = spec
    return result


def _leaves(spec) -> list:
    if isinstance(spec, (list, tuple)):
        return [leaf for s in spec for leaf in _leaves(s)]
    if isinstance(spec, dict):
        return [leaf for s in spec.values() for leaf in _leaves(s)]
    return [spec]


def _check_input_key(module_name: str, key, spec) -> None:
    for s in _leaves(spec):
        if s is None:
            continue
        if isinstance(s, ContextParallelOutput) and isinstance(key, str):
            continue  # gather a split input back to full length before this module (see module docstring)
        if not isinstance(s, ContextParallelInput):
            raise TypeError(f"Plan entry [{module_name!r}][{key!r}] must be ContextParallelInput, got {s!r}.")
        if isinstance(key, int) and not s.split_output:
            raise ValueError(
                f"Plan entry [{module_name!r}][{key}] is keyed by an output index, so it needs split_output=True; "
                "to split a forward parameter, key it by the parameter's name."
            )
        if isinstance(key, str) and s.split_output:
            raise ValueError(
                f"Plan entry [{module_name!r}][{key!r}] has split_output=True, so key it by the output index "
                "(0, 1, ...), not by a parameter name."
            )


@dataclass(frozen=True)
class PlanDeclaration:
    """Everything cp_hooks states about one model class: its plan and the configurations it cannot serve.

    A family file declares `PLANS = {"ClassName": PlanDeclaration(...), ...}`; `register_plan` builds one for a
    user's class. The plan is normalized (checked, diffusers' specs converted) when the declaration is made.

    Args:
        plan: module name -> spec (see the module docstring).
        unsupported: configurations of the class the plan cannot serve (`UnsupportedConfig`); refused by
            `enable_parallelism` on every rank.
        no_batch_split: when set, why the class's batch cannot be split over cfg groups (`cfg_degree > 1` is
            then refused): an input whose leading dimension equals the batch size but is not one row per sample.

    Raises:
        TypeError: a malformed plan, or an `unsupported` entry that is not an `UnsupportedConfig`.

    Example:
        >>> PlanDeclaration({"": {"x": ContextParallelInput(1, 3)}, "head": ContextParallelOutput(1, 3)})
    """

    plan: dict[str, Any]  # as written (diffusers' specs accepted); a normalized `Plan` once made
    unsupported: tuple[UnsupportedConfig, ...] = ()
    no_batch_split: str = ""

    def __post_init__(self) -> None:
        if not all(isinstance(u, UnsupportedConfig) for u in self.unsupported):
            raise TypeError("A plan declaration's `unsupported` takes UnsupportedConfig entries.")
        object.__setattr__(self, "plan", normalize_plan(self.plan))
        object.__setattr__(self, "unsupported", tuple(self.unsupported))

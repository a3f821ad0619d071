"""Plan normalisation, name resolution, lookup order and plan errors (single process: all raise before setup)."""

import pytest
import torch
import torch.nn as nn

from cp_hooks import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
    LocalAttention,
    enable_parallelism,
    get_plan,
    register_plan,
)
from cp_hooks.plans.registry import registered_plan
from cp_hooks.plans.resolve import resolve_modules
from cp_hooks.plans.specs import normalize_plan


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(4, 4)

    def forward(self, hidden_states, temb=None):
        return self.attn(hidden_states)


class Net(nn.Module):
    _cp_plan = {"": {"x": ContextParallelInput(split_dim=1, expected_dims=3)}}

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 4)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_wildcard_resolution():
    model = Net()
    assert [n for n, _ in resolve_modules(model, "blocks.*.attn")] == ["blocks.0.attn", "blocks.1.attn"]
    assert resolve_modules(model, "")[0][1] is model
    with pytest.raises(ValueError, match="'\\*' must follow a ModuleList"):
        resolve_modules(model, "head.*")


def test_negative_index_names_the_last_block():
    model = Net()
    [(name, module)] = resolve_modules(model, "blocks.-1.attn")
    assert name == "blocks.1.attn" and module is model.blocks[1].attn
    assert resolve_modules(model, "blocks.-2")[0][0] == "blocks.0"
    with pytest.raises(ValueError, match="has only 2 children"):
        resolve_modules(model, "blocks.-3")


def test_missing_module_names_closest():
    with pytest.raises(ValueError, match="no module 'blocks.0.atn'.*'blocks.0.attn'"):
        resolve_modules(Net(), "blocks.*.atn")


def test_diffusers_specs_accepted():
    from diffusers.models._modeling_parallel import ContextParallelInput as DInput
    from diffusers.models._modeling_parallel import ContextParallelOutput as DOutput

    plan = normalize_plan({"": {"x": DInput(split_dim=1, expected_dims=3)}, "head": DOutput(gather_dim=1)})
    assert plan[""]["x"] == ContextParallelInput(split_dim=1, expected_dims=3)
    assert plan["head"] == ContextParallelOutput(gather_dim=1)


@pytest.mark.parametrize(
    "plan,error,message",
    [
        ([], TypeError, "must be a dict"),
        ({"": {"x": 3}}, TypeError, "expected ContextParallelInput"),
        ({"": {0: ContextParallelInput(1)}}, ValueError, "needs split_output=True"),
        ({"": {"x": ContextParallelInput(1, split_output=True)}}, ValueError, "key it by the output index"),
        ({"head": ContextParallelInput(1)}, TypeError, "must be a dict of inputs"),
    ],
)
def test_malformed_plans(plan, error, message):
    with pytest.raises(error, match=message):
        normalize_plan(plan)


def test_lookup_order():
    model = Net()
    assert get_plan(model) == normalize_plan(Net._cp_plan)  # the model's own _cp_plan
    registered = {"": {"x": ContextParallelInput(split_dim=1)}, "head": ContextParallelOutput(gather_dim=1)}

    class Registered(Net):
        pass

    register_plan(Registered, registered)
    assert get_plan(Registered()) == registered  # registry beats _cp_plan
    explicit = {"head": ContextParallelOutput(gather_dim=0)}
    assert get_plan(Registered(), explicit) == explicit  # explicit beats registry
    assert registered_plan(nn.Linear) is None

    class NoPlan(nn.Module):
        pass

    with pytest.raises(ValueError, match="register_plan"):
        get_plan(NoPlan())


def test_plan_errors_raise_before_any_collective():
    # No process group exists here: these errors must come from plan validation, which runs first.
    config = ContextParallelConfig(ulysses_degree=2)
    with pytest.raises(ValueError, match="has no module 'blocks.2'"):
        enable_parallelism(Net(), config, plan={"blocks.2": {"hidden_states": ContextParallelInput(1)}})
    with pytest.raises(ValueError, match="no such parameter.*Did you mean 'hidden_states'"):
        enable_parallelism(Net(), config, plan={"blocks.*": {"hidden_state": ContextParallelInput(1)}})
    with pytest.raises(RuntimeError, match="accelerate launch"):
        enable_parallelism(Net(), config)
    with pytest.raises(TypeError, match="ContextParallelConfig"):
        enable_parallelism(Net(), object())
    model = Net()
    assert "_cp_hooks_state" not in model.__dict__ and "forward" not in model.__dict__


def test_local_attention_spec_in_plan():
    plan = normalize_plan({"blocks.*.attn": LocalAttention()})
    assert isinstance(plan["blocks.*.attn"], LocalAttention)
    with torch.no_grad():
        Net()(torch.randn(1, 4, 4))

"""The hook registry: named, ordered, removable, and removal restores the module exactly."""

import inspect

import pytest
import torch
import torch.nn as nn

from cp_hooks.forward.hooks import HookRegistry, ModelHook


class Recorder(ModelHook):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def pre_forward(self, module, args, kwargs):
        self.log.append(f"pre:{self.name}")
        return args, kwargs

    def post_forward(self, module, output):
        self.log.append(f"post:{self.name}")
        return output + 1


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x, scale: float = 1.0):
        return self.lin(x) * scale


def test_order_names_and_exact_removal():
    model, log = Tiny(), []
    x = torch.randn(2, 3)
    original_forward = model.forward
    signature = inspect.signature(model.forward)
    reference = model(x)
    registry = HookRegistry.of(model)
    registry.add("a", Recorder("a", log))
    registry.add("b", Recorder("b", log))
    assert registry.names == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", Recorder("a", log))
    assert torch.allclose(model(x), reference + 2)
    assert log == ["pre:a", "pre:b", "post:b", "post:a"]
    assert inspect.signature(model.forward) == signature and model.forward.__name__ == "forward"
    registry.remove("a")
    assert torch.allclose(model(x, scale=1.0), reference + 1)
    registry.remove("b")
    assert "forward" not in model.__dict__ and HookRegistry.of(model, create=False) is None
    assert not model._forward_pre_hooks and not model._forward_hooks and "__deepcopy__" not in model.__dict__
    assert model.forward == original_forward and inspect.signature(model.forward) == signature
    assert torch.equal(model(x), reference)
    assert set(model.state_dict()) == {"lin.weight", "lin.bias"}


def test_forward_is_never_replaced():
    """Hooks live in torch's hook dicts: a forward another library installed stays in place and is hooked too."""
    model, log = Tiny(), []
    custom = lambda x, scale=1.0: x  # noqa: E731
    model.forward = custom
    registry = HookRegistry.of(model)
    registry.add("a", Recorder("a", log))
    assert model.forward is custom
    x = torch.randn(2, 3)
    assert torch.equal(model(x), x + 1) and log == ["pre:a", "post:a"]
    registry.remove("a")
    assert model.forward is custom and torch.equal(model(x), x)


def test_removal_in_any_order_with_a_forward_replacing_library():
    """A library that wraps `forward` (as diffusers' and accelerate's hooks do), added and removed in either order."""
    model, log = Tiny(), []
    x = torch.randn(2, 3)
    reference = model(x)

    def wrap(module):
        inner = module.forward
        module.forward = lambda *a, **k: inner(*a, **k) * 2
        return lambda: module.__dict__.pop("forward")

    for wrap_first in (True, False):
        unwrap = wrap(model) if wrap_first else None
        HookRegistry.of(model).add("a", Recorder("a", log))
        unwrap = unwrap or wrap(model)
        assert torch.allclose(model(x), reference * 2 + 1)
        unwrap()  # the other library goes first: our hook stays
        assert torch.allclose(model(x), reference + 1)
        HookRegistry.of(model).remove("a")
        assert torch.equal(model(x), reference)


def test_deepcopy_of_a_hooked_module_is_refused_and_allowed_after_removal():
    import copy

    model = Tiny()
    HookRegistry.of(model).add("a", ModelHook())
    with pytest.raises(RuntimeError, match="disable_parallelism"):
        copy.deepcopy(model)
    HookRegistry.of(model).remove("a")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lin.weight.add_(1.0)
    assert not torch.equal(twin.lin.weight, model.lin.weight)  # independent of the original


class Context(ModelHook):
    def __init__(self, log):
        self.log = log

    def enter(self, module):
        self.log.append("enter")

    def exit(self, module):
        self.log.append("exit")


def test_context_exits_on_exception_and_module_stays_usable():
    model, log = Tiny(), []
    HookRegistry.of(model).add("ctx", Context(log))
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 4))  # wrong feature size
    assert log == ["enter", "exit"]
    assert model(torch.randn(2, 3)).shape == (2, 3)
    assert log == ["enter", "exit", "enter", "exit"]


class Refuse(ModelHook):
    def pre_forward(self, module, args, kwargs):
        raise ValueError("refused before the forward")


def test_exit_runs_only_after_its_own_enter():
    # A pre-hook that raises stops the hooks after it before their `enter`; torch still runs their always_call
    # post-hooks, and an unmatched `exit` would unbalance state such as the LocalAttention depth.
    model, log = Tiny(), []
    HookRegistry.of(model).add("first", Context(log))
    HookRegistry.of(model).add("refuse", Refuse())
    HookRegistry.of(model).add("after", Context(log))
    with pytest.raises(ValueError, match="refused"):
        model(torch.randn(2, 3))
    assert log == ["enter", "exit"]  # the first hook's pair only
    HookRegistry.of(model).remove("refuse")
    model(torch.randn(2, 3))
    assert log == ["enter", "exit", "enter", "enter", "exit", "exit"]

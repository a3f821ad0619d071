"""Configurations a built-in plan declares it cannot serve are refused, not computed wrongly.

Without the refusal, Helios with `is_amplify_history=True` and HunyuanVideo with token_replace I2V run
under context parallelism and differ from the single-process output (by 0.36 and 0.07 on the tiny
configs). The refusal reads only the model's attributes, so it comes before the process group is touched:
these tests need none, and every rank of a real launch raises the same error.
"""

import pytest
import torch.nn as nn

from cp_hooks import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
    UnsupportedConfig,
    enable_parallelism,
    is_parallelized,
    register_plan,
)

pytest.importorskip("diffusers")
from cp_hooks.forward.hooks import HookRegistry  # noqa: E402
from cp_hooks.verify.catalogue import get_entry  # noqa: E402


@pytest.mark.parametrize("class_name, case, overrides, message", [
    ("HeliosTransformer3DModel", "history", dict(is_amplify_history=True),
     r"blocks\.0\.attn1\.is_amplify_history=True is not supported"),
    ("HunyuanVideoTransformer3DModel", "t2v", dict(image_condition_type="token_replace"),
     r"config\.image_condition_type='token_replace' is not supported"),
])
def test_builtin_plans_refuse_what_they_cannot_serve(class_name, case, overrides, message):
    model, _ = get_entry(class_name).build(case=case, overrides=overrides)
    with pytest.raises(ValueError, match=message):
        enable_parallelism(model, ContextParallelConfig(ulysses_degree=2))
    assert not is_parallelized(model)
    assert all(HookRegistry.of(m, create=False) is None for m in model.modules())  # nothing was installed


class Block(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return self.proj(x)


class Net(nn.Module):
    def __init__(self, mode="plain"):
        super().__init__()
        self.blocks = nn.ModuleList([Block("plain"), Block(mode)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


_PLAN = {"": {"x": ContextParallelInput(split_dim=1, expected_dims=3)},
         "blocks.1": ContextParallelOutput(gather_dim=1, expected_dims=3)}


def test_user_registered_unsupported_config():
    register_plan(Net, _PLAN, unsupported=(UnsupportedConfig("blocks.*", "mode", ("prefix",), "it needs offsets."),))
    with pytest.raises(ValueError, match=r"Net with blocks\.1\.mode='prefix' is not supported.*it needs offsets"):
        enable_parallelism(Net("prefix"), ContextParallelConfig(ulysses_degree=2))
    # A supported configuration gets past the check (and fails later only for want of a process group here).
    with pytest.raises(RuntimeError, match="process group"):
        enable_parallelism(Net("plain"), ContextParallelConfig(ulysses_degree=2))
    # An explicit plan is the user's own: the registered plan's refusals do not apply to it.
    with pytest.raises(RuntimeError, match="process group"):
        enable_parallelism(Net("prefix"), ContextParallelConfig(ulysses_degree=2), plan=_PLAN)


def test_register_plan_checks_unsupported_entries():
    with pytest.raises(TypeError, match="UnsupportedConfig"):
        register_plan(Net, _PLAN, unsupported=("mode",))

"""The plan checker when a wrong plan makes the model raise, and forward-only cases.

A plan that cuts the wrong dimension makes a layer raise a shape RuntimeError: every rank prints a FAIL line
naming the module whose forward raised, the remaining cases still run, and the exit status is 1, without a
worker's traceback. A rank that raises while its peer waits in a collective does not hang the check: the peer
is released and reports the module it waited in. A case marked forward-only skips its backward with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.checker import ModuleTracker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILY = textwrap.dedent('''
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F

    from cp_hooks import ContextParallelInput, ContextParallelOutput
    from cp_hooks.verify.catalogue import ModelEntry


    class Gate(nn.Module):
        """Identity, except that it raises on rank 1 for a shard (BREAK_RANK_1 set): a failure on one rank only."""

        def forward(self, x):
            if BREAK_RANK_1 and dist.is_initialized() and dist.get_rank() == 1 and x.shape[1] < 12:
                raise RuntimeError("the gate breaks on rank 1")
            return x


    class TinyDiT(nn.Module):
        def __init__(self, dim=16, heads=4):
            super().__init__()
            self.heads = heads
            self.gate = Gate()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj_out = nn.Linear(dim, dim)

        def forward(self, hidden_states):
            hidden_states = self.gate(hidden_states)
            b, s, d = hidden_states.shape
            q, k, v = self.qkv(hidden_states).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
            return (self.proj_out(x + hidden_states),)


    BREAK_RANK_1 = False
    SPLIT_DIM = 1
    PLAN = {"": {"hidden_states": ContextParallelInput(split_dim=SPLIT_DIM, expected_dims=3)},
            "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}
    CASES = {"tokens": lambda config, g: dict(hidden_states=torch.randn(2, 12, config["dim"], generator=g)),
             "more": lambda config, g: dict(hidden_states=torch.randn(1, 12, config["dim"], generator=g))}
    ENTRIES = [ModelEntry("TinyDiT", PLAN, {"dim": 16}, CASES, forward_only_cases=FORWARD_ONLY)]
''')


def _check(tmp_path, *args: str, **settings) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m cp_hooks check my_family:TinyDiT --entry my_family:ENTRIES ARGS` with the
    family file's settings (BREAK_RANK_1, SPLIT_DIM, FORWARD_ONLY) replaced."""
    source = FAMILY.replace("ENTRIES = [", f"FORWARD_ONLY = {settings.pop('FORWARD_ONLY', {})!r}\nENTRIES = [")
    for name, value in settings.items():
        source = source.replace(f"\n{name} = ", f"\n{name} = {value!r}  # was ")
    (tmp_path / "my_family.py").write_text(source)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cp_hooks",
               "check", "my_family:TinyDiT", "--entry", "my_family:ENTRIES", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)])}
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=str(tmp_path), env=env)


def test_a_shape_error_is_a_fail_line_naming_the_module_on_every_rank(tmp_path):
    # The hidden dimension split instead of the tokens: qkv gets 8 features of 16, on both ranks.
    result = _check(tmp_path, SPLIT_DIM=2)
    out = result.stdout
    assert result.returncode != 0, out + result.stderr
    for rank in (0, 1):
        for case in ("tokens", "more"):  # the first case's failure does not stop the next one
            assert f"[rank {rank}] {case}: FAIL RuntimeError in module 'qkv' (Linear), inside <model>: " in out, out
    assert "mat1 and mat2 shapes cannot be multiplied" in out
    assert "mat1 and mat2" not in result.stderr  # reported, not a worker's traceback
    assert out.rstrip().endswith("FAIL")


def test_one_rank_raising_while_its_peer_waits_in_a_collective_does_not_hang(tmp_path):
    result = _check(tmp_path, BREAK_RANK_1=True)
    out = result.stdout
    assert result.returncode != 0, out + result.stderr
    assert ("[rank 1] tokens: FAIL RuntimeError in module 'gate' (Gate), inside <model>: the gate breaks on rank 1"
            in out)
    # Rank 0 was in the attention's collective (called from the model's own forward) when it was released.
    assert "[rank 0] tokens: FAIL RuntimeError in module '<model>' (TinyDiT)" in out, out + result.stderr
    assert "did not finish case 1" in out and "more:" not in out  # the remaining case is not run
    assert "the gate breaks" not in result.stderr


def test_a_forward_only_case_skips_its_backward_with_the_reason(tmp_path):
    result = _check(tmp_path, "--backward", FORWARD_ONLY={"more": "its kernel has no backward on CPU"})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "tokens gradients of" in out and "more output 0 [1, 12, 16]" in out
    assert "more gradients: not checked, the case is forward-only: its kernel has no backward on CPU" in out
    assert out.rstrip().endswith("PASS")


def test_forward_only_cases_must_name_cases_with_a_reason():
    case = {"t": lambda config, g: {}}
    with pytest.raises(ValueError, match="forward_only_cases"):
        ModelEntry("M", {"": {}}, {}, case, forward_only_cases={"other": "why"})
    with pytest.raises(ValueError, match="forward_only_cases"):
        ModelEntry("M", {"": {}}, {}, case, forward_only_cases={"t": " "})


def test_the_tracker_names_the_innermost_module_whose_forward_raised():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(3, 2)))
    tracker = ModuleTracker()
    with pytest.raises(RuntimeError) as caught, tracker.watching(model):
        model(torch.randn(2, 4))
    assert tracker.describe(caught.value).startswith("RuntimeError in module '1.1' (Linear), inside <model> > 1: ")
    # Modules that returned are off the stack, and the hooks are gone once the block ends.
    with tracker.watching(model):
        model[0](torch.randn(2, 4))
    assert tracker.stack == []
    model[0](torch.randn(2, 4))
    assert tracker.stack == []
    assert tracker.describe(ValueError("refused")) == (
        "ValueError outside any module's forward (enabling the plan, comparing, or the backward): refused")

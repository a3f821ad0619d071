"""Every catalogued model under context parallelism against the same model in one process (fp32).

The catalogue (the family files in cp_hooks/verify/models/, their plans in cp_hooks/plans/) lists each model's
tiny config, its input cases (as its pipeline shapes them) and the modes it is verified in; this file runs
exactly those, so the models table of docs/models.md, generated from the same list, claims what is tested.
Tolerance: FP32_TOL (max |cp - reference| / max(1, max |reference|)).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

from cp_hooks.verify.catalogue import ENTRIES, get_entry
from cp_hooks.verify.checker import compare_parallel
from cp_testing import FP32_TOL, catalogue_runs, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def verify_entry(class_name: str, world: int) -> list[str]:
    """Every case of the entry in every mode of `world` ranks; returns one line per (case, mode, output)."""
    lines, failures = [], []
    for case, mode, model, inputs, config in catalogue_runs(class_name, world):
        for d in compare_parallel(model, inputs, config, tol=FP32_TOL):
            line = f"{class_name} {case} {mode.name} output {d.index}: rel {d.rel:.2e}"
            lines.append(line)
            if not d.passed:
                failures.append(line)
    assert not failures, f"rank {dist.get_rank()}: errors above {FP32_TOL}:\n" + "\n".join(failures)
    return lines


@pytest.mark.parametrize("class_name", list(ENTRIES))
def test_two_ranks(pool, class_name):
    pool(2).run(verify_entry, class_name, 2, timeout=300)


HYBRID = [name for name, entry in ENTRIES.items() if entry.hybrid_modes]


@pytest.mark.parametrize("class_name", HYBRID)
def test_ring_x_ulysses(pool, class_name):
    pool(4).run(verify_entry, class_name, 4, timeout=300)


# ----------------------------------------------------------------------------- bad input, in the pool
def refuse_without_anything(class_name: str) -> str:
    """A model whose text length does not divide, run without the anything flags: the error names the flag."""
    entry = get_entry(class_name)
    model, inputs = entry.build()
    config = make_config(1, 2)
    with pytest.raises(ValueError, match="ulysses_anything=True"):
        compare_parallel(model, inputs, config)
    return "refused"


def test_uneven_text_without_anything_names_the_flag(pool):
    pool(2).run(refuse_without_anything, "SD3Transformer2DModel")


def wrong_class_plan() -> str:
    """Wan's plan on a Flux model: refused before any collective, naming the missing module."""
    from cp_hooks.plans.wan import WAN

    model, inputs = get_entry("FluxTransformer2DModel").build()
    with pytest.raises(ValueError, match="has no module 'rope'"):
        compare_parallel(model, inputs, make_config(1, 2), plan=WAN)
    return "refused"


def test_plan_for_the_wrong_class_is_refused(pool):
    pool(2).run(wrong_class_plan)


# ----------------------------------------------------------------------------- README
def test_readme_table_is_generated():
    from cp_hooks.verify.catalogue.table import MODELS_PAGE, models_section, readme_section

    with open(os.path.join(ROOT, MODELS_PAGE)) as f:
        section = readme_section(f.read())
    assert section == models_section(), (
        f"{MODELS_PAGE}'s models section differs from the catalogue; regenerate it with "
        f"`python -m cp_hooks table --readme {MODELS_PAGE}`"
    )


# ----------------------------------------------------------------------------- the checker CLI
# Flux's plan without its text split: every rank keeps the whole text, so its keys are counted twice in the
# joint attention. Nothing crashes (the gathered output has the right shape); only the comparison finds it.
WRONG_PLAN = textwrap.dedent('''
    from cp_hooks import ContextParallelInput, ContextParallelOutput
    PLAN = {
        "": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
             "img_ids": ContextParallelInput(split_dim=0, expected_dims=2)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
''')


def run_checker(*args: str, cwd: str | None = None, ranks: int | None = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node ranks -m cp_hooks check ARGS` (plain `python -m` if ranks is None)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks else []
    command = [sys.executable, *launcher, "-m", "cp_hooks", "check", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, cwd]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=cwd or ROOT, env=env)


def test_checker_passes(tmp_path):
    result = run_checker("FluxTransformer2DModel", "--ring", "2", "--rotate-method", "alltoall", cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "t2i output 0 [1, 24, 16]: max diff" in result.stdout and result.stdout.rstrip().endswith("PASS")


def test_checker_catches_a_plan_that_misses_the_text(tmp_path):
    (tmp_path / "wrong_plan.py").write_text(WRONG_PLAN)
    result = run_checker("FluxTransformer2DModel", "--plan", "wrong_plan:PLAN", "--case", "t2i", cwd=str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "-> FAIL" in result.stdout and "is probably not split" in result.stdout


def test_checker_without_a_plan_says_how_to_declare_one(tmp_path):
    # Refused before any process group is needed, so one process shows the same message (and saves a launch).
    result = run_checker("PriorTransformer", cwd=str(tmp_path), ranks=None)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "has no context-parallel plan" in result.stdout and "register_plan" in result.stdout


# ----------------------------------------------------------------------------- the catalogue is complete
def _diffusers_transformer_classes() -> list[str]:
    """Every model class the installed diffusers exports from its `models.transformers` package."""
    import diffusers
    from diffusers.models.modeling_utils import ModelMixin

    names = []
    for name in dir(diffusers):
        try:
            obj = getattr(diffusers, name)
        except Exception:  # an optional dependency missing: diffusers raises on access
            continue
        if (isinstance(obj, type) and issubclass(obj, ModelMixin)
                and obj.__module__.startswith("diffusers.models.transformers.")):
            names.append(name)
    return sorted(names)


def test_every_diffusers_transformer_is_verified_or_has_a_reason():
    pytest.importorskip("diffusers")
    from cp_hooks.verify.catalogue import UNSUPPORTED

    missing = [n for n in _diffusers_transformer_classes() if n not in ENTRIES and n not in UNSUPPORTED]
    assert not missing, ("these diffusers transformer classes are neither verified in a family file under "
                         f"cp_hooks/verify/models/ nor listed there in UNSUPPORTED with the reason: {missing}")
    assert all(reason.strip() for reason in UNSUPPORTED.values())


def test_every_builtin_plan_has_verification_cases():
    pytest.importorskip("diffusers")
    import diffusers

    from cp_hooks.plans.index import BUILTIN_FAMILIES
    from cp_hooks.verify.catalogue import ModelEntry

    registered = {name for name in BUILTIN_FAMILIES if hasattr(diffusers, name)}
    assert registered == {n for n in ENTRIES if hasattr(diffusers, n)}
    assert all(entry.cases for entry in ENTRIES.values())
    with pytest.raises(ValueError, match="has no input cases"):
        ModelEntry("MyModel", {"": {}}, {}, {})


# A user's own model family, outside diffusers and the catalogue: one file with the model, its plan and cases.
USER_FAMILY = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from cp_hooks import ContextParallelInput, ContextParallelOutput
    from cp_hooks.verify.catalogue import ModelEntry


    class TinyDiT(nn.Module):
        def __init__(self, dim=16, heads=4):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj_out = nn.Linear(dim, dim)

        def forward(self, hidden_states):
            b, s, d = hidden_states.shape
            q, k, v = self.qkv(hidden_states).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)
            return (self.proj_out(x + hidden_states),)


    PLAN = {"": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
            "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}
    ENTRIES = [ModelEntry("TinyDiT", PLAN, {"dim": 16}, {
        "tokens": lambda config, g: dict(hidden_states=torch.randn(2, 12, config["dim"], generator=g))})]
''')


def test_checker_verifies_a_users_family_file(tmp_path):
    (tmp_path / "my_family.py").write_text(USER_FAMILY)
    result = run_checker("my_family:TinyDiT", "--entry", "my_family:ENTRIES", "--backward", cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tokens output 0 [2, 12, 16]" in result.stdout and result.stdout.rstrip().endswith("PASS")
    # The entry's own plan is what is checked: one that gathers at a module the model lacks is refused.
    (tmp_path / "my_family.py").write_text(USER_FAMILY.replace('"proj_out": Context', '"proj": Context'))
    result = run_checker("my_family:TinyDiT", "--entry", "my_family:ENTRIES", cwd=str(tmp_path))
    assert result.returncode == 1 and "has no module 'proj'" in result.stdout, result.stdout + result.stderr

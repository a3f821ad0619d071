"""Every catalogued model under context parallelism against the same model in one process (fp32).

The catalogue (the family files in cp_hooks/models/) lists each model's tiny config, its input cases (as its pipeline shapes
them) and the modes it is verified in; this file runs exactly those, so the README table, generated from
the same list, claims what is tested. Tolerance: FP32_TOL (max |cp - reference| / max(1, max |reference|)).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

from cp_hooks.catalogue import ENTRIES, get_entry
from cp_hooks.checker import compare_parallel
from cp_testing import FP32_TOL, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def verify_entry(class_name: str, world: int) -> list[str]:
    """Every case of the entry in every mode of `world` ranks; returns one line per (case, mode, output)."""
    entry = get_entry(class_name)
    modes = entry.modes if world == 2 else entry.hybrid_modes
    lines, failures = [], []
    for case in entry.cases:
        model, inputs = entry.build(case)
        for mode in modes:
            kwargs = mode.config_kwargs(entry.anything)
            config = make_config(kwargs.pop("ring_degree"), kwargs.pop("ulysses_degree"), **kwargs)
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
    from cp_hooks.models.wan import WAN

    model, inputs = get_entry("FluxTransformer2DModel").build()
    with pytest.raises(ValueError, match="has no module 'rope'"):
        compare_parallel(model, inputs, make_config(1, 2), plan=WAN)
    return "refused"


def test_plan_for_the_wrong_class_is_refused(pool):
    pool(2).run(wrong_class_plan)


# ----------------------------------------------------------------------------- README
def test_readme_table_is_generated():
    from cp_hooks.catalogue.table import models_section, readme_section

    with open(os.path.join(ROOT, "README.md")) as f:
        section = readme_section(f.read())
    assert section == models_section(), (
        "README.md's models section differs from the catalogue; regenerate it with "
        "`python -m cp_hooks table --readme README.md`"
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

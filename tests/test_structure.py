"""The package's structure (docs/architecture.md): enabling imports only what it runs, the runtime never imports
`cp_hooks.verify`, a family whose import fails affects only its classes, the package has no import cycles, and
the plan registry's static index, the family files and the checker's catalogue name the same classes.

The import checks run in fresh processes (two gloo ranks, `ContextParallelConfig(ulysses_degree=2)`): what a
test process has already imported would hide what enabling imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import cp_hooks

# Run by each of two ranks: `python script.py INIT_FILE RANK SCENARIO`; rank 0 prints one JSON line of findings.
_SCRIPT = textwrap.dedent('''
    import json, sys
    init_file, rank, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def family_modules():
        # cp_hooks.plans' own machinery is not a family file.
        own = {"index", "pipelines", "registry", "resolve", "specs"}
        return sorted(m for m in sys.modules if m.startswith("cp_hooks.plans.") and m.split(".")[2] not in own)

    def model_modules():
        return {m for m in sys.modules if m.startswith("diffusers.models.")}

    if scenario == "broken":
        # A family file whose import fails (as a diffusers model module with a missing optional dependency would),
        # and an index entry naming a family file that does not exist.
        sys.modules["cp_hooks.plans.sd3"] = None
        import cp_hooks.plans.index
        cp_hooks.plans.index.BUILTIN_FAMILIES["WanTransformer3DModel"] = "no_such_family"

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    import cp_hooks
    verify_modules = sorted(m for m in sys.modules if m.startswith("cp_hooks.verify"))
    found = {"after_import_cp_hooks": family_modules() + verify_modules}
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    flux = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(hidden_states=torch.randn(1, 24, 16, generator=g),
                  encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                  pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.ones(1),
                  guidance=torch.ones(1) * 3, img_ids=torch.zeros(24, 3), txt_ids=torch.zeros(8, 3), return_dict=False)
    before = set(sys.modules)
    models_before = model_modules()
    cp_hooks.enable_parallelism(flux, cp_hooks.ContextParallelConfig(ulysses_degree=2))
    with torch.no_grad():
        flux(**inputs)
    new = set(sys.modules) - before
    found["enable_flux"] = dict(
        families=sorted(m for m in new if m in family_modules()),
        verify=sorted(m for m in sys.modules if m.startswith("cp_hooks.verify")),
        model_modules=sorted(model_modules() - models_before),
    )
    cp_hooks.disable_parallelism(flux)

    if scenario == "broken":
        from diffusers import SD3Transformer2DModel, WanTransformer3DModel

        sd3 = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                    num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
                                    pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16)
        wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=8, in_channels=4,
                                    out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1,
                                    rope_max_seq_len=32)
        for name, model in (("sd3", sd3), ("wan", wan)):
            try:
                cp_hooks.enable_parallelism(model, cp_hooks.ContextParallelConfig(ulysses_degree=2))
                found[name] = "enabled"
            except Exception as error:
                found[name] = f"{type(error).__name__}: {error}"
        # Flux still enables after the broken families were looked up.
        cp_hooks.enable_parallelism(flux, cp_hooks.ContextParallelConfig(ulysses_degree=2))
        with torch.no_grad():
            flux(**inputs)
        cp_hooks.disable_parallelism(flux)
        found["flux_again"] = "enabled"

    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(found))
''')


def _run_ranks(tmp_path, scenario: str) -> dict:
    script = tmp_path / "ranks.py"
    script.write_text(_SCRIPT)
    init_file = tmp_path / "rendezvous"
    procs = [subprocess.Popen([sys.executable, str(script), str(init_file), str(rank), scenario],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"rank exited with {proc.returncode}:\n{out}\n{err[-4000:]}"
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def test_enabling_flux_imports_only_its_family_and_nothing_of_verify(tmp_path):
    pytest.importorskip("diffusers")
    found = _run_ranks(tmp_path, "flux")
    assert found["after_import_cp_hooks"] == []  # `import cp_hooks` loads no family file and nothing of verify
    assert found["enable_flux"] == dict(families=["cp_hooks.plans.flux"], verify=[], model_modules=[])


def test_a_family_that_fails_to_import_affects_only_its_classes(tmp_path):
    pytest.importorskip("diffusers")
    found = _run_ranks(tmp_path, "broken")
    assert found["enable_flux"]["families"] == ["cp_hooks.plans.flux"]
    assert found["flux_again"] == "enabled"
    # The broken classes are refused with an error that names the class and the family file.
    assert found["sd3"].startswith("ImportError: The built-in context-parallel plan of SD3Transformer2DModel is in "
                                   "cp_hooks.plans.sd3, which failed to import"), found["sd3"]
    assert "WanTransformer3DModel is in cp_hooks.plans.no_such_family" in found["wan"], found["wan"]


def test_a_users_plan_takes_precedence_for_its_class_only():
    pytest.importorskip("diffusers")
    code = textwrap.dedent('''
        import sys
        import torch.nn as nn
        from diffusers import FluxTransformer2DModel
        from cp_hooks import ContextParallelOutput, register_plan
        from cp_hooks.plans.registry import registered_plan

        builtin = registered_plan(FluxTransformer2DModel)
        assert "proj_out" in builtin and "cp_hooks.plans.flux" in sys.modules
        mine = {"proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}
        register_plan(FluxTransformer2DModel, mine)
        assert registered_plan(FluxTransformer2DModel) == mine

        class Subclass(FluxTransformer2DModel):
            pass

        assert registered_plan(Subclass) == mine  # found through the MRO, by class name

        class FluxTransformer2DModel(nn.Module):  # a class of the user's that only shares the name
            pass

        assert registered_plan(FluxTransformer2DModel) is None
        # Registered before its family is loaded, a user's plan still wins over the built-in one.
        from diffusers import WanTransformer3DModel
        register_plan(WanTransformer3DModel, mine)
        assert registered_plan(WanTransformer3DModel) == mine
        print("ok")
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr[-4000:]


def _package_modules() -> dict[str, str]:
    """Every module of the cp_hooks package: name -> source file."""
    modules = {"cp_hooks": cp_hooks.__file__}
    for info in pkgutil.walk_packages(cp_hooks.__path__, "cp_hooks."):
        modules[info.name] = importlib.util.find_spec(info.name).origin
    return modules


def _module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """The import statements a module runs when it is imported: not those inside functions or classes, nor under
    `if TYPE_CHECKING`."""
    found: list[ast.stmt] = []

    def visit(statements):
        for statement in statements:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                found.append(statement)
            elif isinstance(statement, ast.If):
                test = statement.test
                if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                    visit(statement.orelse)
                else:
                    visit(statement.body)
                    visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                visit(statement.body)
                for handler in statement.handlers:
                    visit(handler.body)
                visit(statement.orelse)
                visit(statement.finalbody)
            elif isinstance(statement, (ast.With,)):
                visit(statement.body)

    visit(tree.body)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (`from cp_hooks.x import y` counts as an import
    of `cp_hooks.x.y` when y is a submodule, else of `cp_hooks.x`)."""
    modules = _package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        edges: set[str] = set()
        for statement in _module_level_imports(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(statement, ast.Import):
                edges.update(alias.name for alias in statement.names if alias.name in modules)
                continue
            base = statement.module or ""
            if statement.level:  # relative: resolved against this module's package
                parts = package.split(".")[:len(package.split(".")) - statement.level + 1]
                base = ".".join(parts + ([statement.module] if statement.module else []))
            for alias in statement.names:
                if f"{base}.{alias.name}" in modules:
                    edges.add(f"{base}.{alias.name}")
                elif base in modules:
                    edges.add(base)
        graph[name] = edges - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    assert "cp_hooks.plans.registry" in graph and graph["cp_hooks"]  # the walk sees the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_runtime_never_imports_verify():
    graph = _import_graph()
    runtime = [name for name in graph if not name.startswith("cp_hooks.verify") and name != "cp_hooks.__main__"]
    offenders = {name: sorted(m for m in graph[name] if m.startswith("cp_hooks.verify")) for name in runtime}
    assert not {name: found for name, found in offenders.items() if found}


def test_the_index_names_what_the_family_files_declare():
    from cp_hooks.plans.index import BUILTIN_FAMILIES
    from cp_hooks.plans.specs import PlanDeclaration

    declared: dict[str, str] = {}
    own = {"index", "pipelines", "registry", "resolve", "specs"}
    for info in pkgutil.iter_modules(importlib.import_module("cp_hooks.plans").__path__):
        if info.name in own or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"cp_hooks.plans.{info.name}")
        assert all(isinstance(d, PlanDeclaration) for d in module.PLANS.values()), info.name
        for class_name in module.PLANS:
            assert class_name not in declared, f"{class_name} is declared by {declared[class_name]} and {info.name}"
            declared[class_name] = info.name
    assert declared == BUILTIN_FAMILIES


def test_the_catalogue_lists_every_class_the_index_knows():
    from cp_hooks.plans.index import BUILTIN_FAMILIES
    from cp_hooks.plans.registry import builtin_declaration
    from cp_hooks.verify.catalogue import ENTRIES

    assert set(ENTRIES) == set(BUILTIN_FAMILIES)
    # Each plan is stated once: an entry verifies exactly the registry's declaration.
    for name, entry in ENTRIES.items():
        declared = builtin_declaration(name)
        assert (entry.plan, entry.unsupported, entry.no_batch_split) == (
            declared.plan, declared.unsupported, declared.no_batch_split), name

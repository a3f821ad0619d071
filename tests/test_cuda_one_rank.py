"""One GPU, one rank, a degree-1 mesh: the context-parallel path (plan split and gather, the attention
operator, the CUDA local kernels) under torch.compile with inductor and CUDA graphs, and offloading that
computes on the GPU.

A mesh whose "ring" and "ulysses" dimensions are 1 runs every hook and operator of cp_hooks with nothing to
exchange, so it checks on one GPU what compile and offloading do to that path; the collectives themselves are
tested with gloo on CPU (tests/test_compile.py, tests/test_diffusers_stack.py), since nccl needs one GPU per
rank. Skipped without CUDA; on a GPU machine: `python -m pytest tests/test_cuda_one_rank.py`.

Tolerances follow the dtype compared (tests/cp_testing.py). Compile: against the same weights run eagerly in
fp64 in one process without cp_hooks; fp32 (TF32 off) within relative 1e-5; bf16 no further from fp64 than
one process's eager bf16 output is, plus 3e-2 (this tiny random model alone is about 3e-2 from fp64 in bf16,
its gradients much further, mostly from its sinusoidal embeddings: so bf16 is checked forward only), so a NaN
or a wrong attention fails and bf16's own rounding does not. Dynamic shapes and offloading: fp32 against the
fp32 eager model, 1e-5. What ran on an H100, and with which result: benchmarks/README.md, "cuda-1gpu-compile".
"""

from __future__ import annotations

import copy

import pytest
import torch

import tiny_models
from cp_testing import BF16_TOL, FP32_TOL, ORDERS, apply_around_enable, rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOLERANCE = {torch.float32: FP32_TOL, torch.bfloat16: BF16_TOL}
DEVICE = "cuda"  # the functions below also run on "cpu" (gloo, backend "aot_eager") to try them out
BACKEND = "inductor"


def _one_rank_config():
    from torch.distributed.device_mesh import init_device_mesh

    from cp_hooks import ContextParallelConfig

    mesh = init_device_mesh(DEVICE, (1, 1), mesh_dim_names=("ring", "ulysses"))
    return ContextParallelConfig(mesh=mesh)


def _to(inputs: dict, device, dtype) -> dict:
    """Inputs on `device`; floating tensors in `dtype` except the position ids (kept fp32 as pipelines do)."""
    moved = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            keep = name.endswith("_ids") or not value.is_floating_point()
            value = value.to(device) if keep else value.to(device, dtype)
        moved[name] = value
    return moved


def _flux(dtype, height=32, width=32, seed=0):
    """A tiny Flux on the GPU with 1024 image tokens (flash/cuDNN attention applies to bf16)."""
    model, inputs = tiny_models.tiny_flux(seed=seed, height=height, width=width, text_len=12)
    return model.to(DEVICE, dtype), _to(inputs, DEVICE, dtype)


def _no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# ----------------------------------------------------------------------------------------------- offloading
def _gpu_offloads() -> dict:
    import accelerate

    cuda, cpu = torch.device(DEVICE), torch.device("cpu")
    return {
        "group offload, block_level": lambda m: m.enable_group_offload(cuda, cpu, offload_type="block_level",
                                                                        num_blocks_per_group=1),
        "group offload, block_level, streams": lambda m: m.enable_group_offload(
            cuda, cpu, offload_type="block_level", num_blocks_per_group=1, use_stream=True),
        "group offload, leaf_level": lambda m: m.enable_group_offload(cuda, cpu, offload_type="leaf_level"),
        "group offload, leaf_level, streams": lambda m: m.enable_group_offload(cuda, cpu, offload_type="leaf_level",
                                                                                use_stream=True),
        "accelerate cpu_offload": lambda m: accelerate.cpu_offload(m, execution_device=cuda),
        "layerwise casting, fp8 storage": lambda m: m.to(cuda).enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32),
    }


def offload_parity() -> dict:
    """Weights resting on the CPU, compute on the GPU, cp_hooks enabled before or after: the offloaded
    model's single-process output."""
    from cp_hooks import disable_parallelism

    _no_tf32()
    errors = {}
    for name, apply in _gpu_offloads().items():
        if "streams" in name and DEVICE == "cpu":
            continue  # a trial run on the CPU: streams need a device that has them
        model, inputs = tiny_models.tiny_flux(height=16, width=16)
        inputs = _to(inputs, DEVICE, torch.float32)
        apply(model)
        with torch.no_grad():
            reference = model(**inputs)[0]
        for order in ORDERS:
            model, _ = tiny_models.tiny_flux(height=16, width=16)
            try:
                apply_around_enable(model, _one_rank_config(), apply, order)
                with torch.no_grad():
                    errors[f"{name}, {order}"] = rel_err(model(**inputs)[0], reference)
            except Exception as exc:  # every case reports, each with its own reason
                errors[f"{name}, {order}"] = f"{type(exc).__name__}: {exc}"[:400]
            finally:
                disable_parallelism(model)
    return errors


def test_offloading_on_cuda(pool):
    [errors] = pool(1, "nccl").run(offload_parity, timeout=180)
    print(errors)
    bad = {k: v for k, v in errors.items() if isinstance(v, str) or not v <= FP32_TOL}
    assert not bad, bad


# ------------------------------------------------------------------------------------------------- compile
def compiled_parity(mode: str | None, dtype_name: str, backward: bool, regional: bool = False) -> dict:
    """The enabled model compiled with inductor (fullgraph=True) against the fp64 eager single-process model
    (the same rounded weights): forward, optionally gradients, then two denoising-like steps that must not
    recompile."""
    import torch._dynamo

    from cp_hooks import disable_parallelism, enable_parallelism

    _no_tf32()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dtype = getattr(torch, dtype_name)
    model, inputs = _flux(dtype)
    exact = copy.deepcopy(model).double()

    def reference(step_inputs):
        return exact(**_to(step_inputs, DEVICE, torch.float64))[0]

    weight = torch.randn(inputs["hidden_states"].shape, device=DEVICE, dtype=dtype)
    expected = reference(inputs)
    if backward:
        (expected * weight.double()).sum().backward()
    expected = expected.detach()
    exact_grads = dict(exact.named_parameters())
    result, baseline = {}, {}
    if dtype != torch.float32:
        # Where the model's own rounding is the question, what one process gets in this dtype is the baseline.
        out = model(**inputs)[0]
        baseline["forward"] = rel_err(out, expected)
        if backward:
            (out * weight).sum().backward()
            baseline["gradients"] = max(rel_err(p.grad, exact_grads[n].grad) for n, p in model.named_parameters()
                                        if p.grad is not None)
            model.zero_grad(set_to_none=True)
    enable_parallelism(model, _one_rank_config())
    from unittest import mock

    import cp_hooks.attention.ops as ops

    inner = mock.patch.object(ops, "_inner_forward", wraps=ops._inner_forward)  # counts the routed attention calls
    attention_calls = inner.start()
    try:
        options = dict(fullgraph=True, mode=mode, backend=BACKEND)
        if regional:
            model.compile_repeated_blocks(**options)
            compiled = model
        else:
            compiled = torch.compile(model, **options)
        with torch.set_grad_enabled(backward):
            out = compiled(**inputs)[0]
            result["forward"] = rel_err(out, expected)
            if backward:
                (out * weight).sum().backward()
                for name, p in model.named_parameters():
                    if p.grad is not None:
                        err = rel_err(p.grad, exact_grads[name].grad)
                        if err != err:  # NaN: max() would drop it; keep it, and say where
                            result.setdefault("NaN gradients", []).append(name)
                        worst = result.get("gradients", 0.0)
                        result["gradients"] = err if err != err or worst != worst else max(worst, err)
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=not backward):
            # What changes between denoising steps: values, not shapes (with gradients on, the no-grad call
            # below is a new graph: grad mode is part of a graph's guards).
            for step in range(2):
                g = torch.Generator(device=DEVICE).manual_seed(10 + step)
                step_inputs = dict(inputs, timestep=torch.rand(1, generator=g, device=DEVICE, dtype=dtype),
                                   hidden_states=torch.randn(inputs["hidden_states"].shape, generator=g,
                                                             device=DEVICE, dtype=dtype))
                got = compiled(**step_inputs)[0].clone()  # CUDA graphs reuse their output buffers
                result[f"step {step}"] = rel_err(got, reference(step_inputs))
    finally:
        inner.stop()
        disable_parallelism(model)
    result["attention calls routed"] = attention_calls.call_count
    result["graph breaks"] = sum(torch._dynamo.utils.counters["graph_break"].values())
    result["cudagraph skips"] = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
    return result, baseline


COMPILE_CASES = [
    # (inductor mode, dtype, backward, regional)
    (None, "float32", True, False),
    ("max-autotune-no-cudagraphs", "bfloat16", False, False),
    ("reduce-overhead", "float32", False, False),
    (None, "float32", True, True),
]


@pytest.mark.parametrize("mode,dtype,backward,regional", COMPILE_CASES,
                         ids=[f"{m or 'default'}-{d}-{'fwd+bwd' if b else 'fwd'}{'-regional' if r else ''}"
                              for m, d, b, r in COMPILE_CASES])
def test_compiled_on_cuda(pool, mode, dtype, backward, regional):
    [(result, baseline)] = pool(1, "nccl").run(compiled_parity, mode, dtype, backward, regional, timeout=300)
    print(mode, dtype, result, "one process, eager:", baseline)
    tol = TOLERANCE[getattr(torch, dtype)]
    for key, err in result.items():
        if key in ("forward", "gradients") or key.startswith("step"):
            bound = tol + baseline.get(key, baseline.get("forward", 0.0) if key.startswith("step") else 0.0)
            assert err <= bound, f"{key}: {err:.2e} > {bound:.2e}; {result}"  # a NaN fails too
    assert result["graph breaks"] == 0, result
    assert result["attention calls routed"] > 0, f"the context-parallel attention never ran: {result}"
    if mode == "reduce-overhead":
        assert result["cudagraph skips"] == 0, f"CUDA graphs were not used: {result}"


def dynamic_two_resolutions() -> list[float]:
    """dynamic=True on the GPU: one graph for two resolutions, each equal to its eager output."""
    import torch._dynamo

    from cp_hooks import disable_parallelism, enable_parallelism

    _no_tf32()
    torch._dynamo.reset()
    model, small = _flux(torch.float32, height=20, width=24)
    _, large = _flux(torch.float32, height=36, width=24)
    references = [model(**small)[0], model(**large)[0]]
    enable_parallelism(model, _one_rank_config())
    try:
        compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=BACKEND)
        errors = [rel_err(compiled(**small)[0], references[0])]
        with torch._dynamo.config.patch(error_on_recompile=True):
            errors.append(rel_err(compiled(**large)[0], references[1]))
    finally:
        disable_parallelism(model)
    return errors


def test_dynamic_shapes_on_cuda(pool):
    [errors] = pool(1, "nccl").run(dynamic_two_resolutions, timeout=240)
    assert max(errors) <= FP32_TOL, errors


def on_cpu(name: str, *args):
    """Run one of the functions above on the CPU (gloo, backend "aot_eager"): tests/test_compile.py."""
    global DEVICE, BACKEND
    DEVICE, BACKEND = "cpu", "aot_eager"
    return globals()[name](*args)

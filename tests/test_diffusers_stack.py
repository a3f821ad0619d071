"""The rest of the diffusers stack with context parallelism, against one process with the same features (fp32, 1e-5).

- LoRA (peft, through diffusers' PeftAdapterMixin): adapters added before and after enable, switched with
  `set_adapters`, combined with weights, and hot-swapped (`load_lora_adapter(..., hotswap=True)`); an adapter
  on a module the plan hooks, added after enable, is refused with a clear error;
- group offloading (block_level, leaf_level), accelerate's `cpu_offload` and `cpu_offload_with_hook`, the
  pipeline's `enable_model_cpu_offload`, layerwise casting (fp8 and bf16 storage), each before and after enable;
- the device check reads the device an offloaded model computes on (unit tests with fake hooks, one process).

On CPU the onload / execution device is the CPU too: these tests check that the features compose with cp_hooks
and give the single-process result; the device check is what differs on GPUs, and is unit-tested.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.compat.offload import execution_device
from cp_hooks.parallel import _check_model_device
from cp_testing import FP32_TOL, ORDERS, apply_around_enable, make_config, rel_err

MODES = [(1, 2), (2, 1)]  # (ring, ulysses): Ulysses 2, ring 2
CPU = torch.device("cpu")


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


# --- LoRA ---


ATTENTION_PROJECTIONS = ["to_q", "to_k", "to_v", "to_out.0"]


def _add_lora(model, name: str, seed: int, targets=ATTENTION_PROJECTIONS) -> None:
    from peft import LoraConfig

    torch.manual_seed(seed)  # init_lora_weights=False draws the adapter's weights: the same on every build
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False),
                      adapter_name=name)


ADAPTER_CASES = {"a": ("a",), "b": ("b",), "a+b": (["a", "b"], [0.5, 1.0])}


def lora_parity(ring: int, ulysses: int) -> dict:
    from peft.utils import get_peft_model_state_dict

    model, inputs = tiny_models.tiny_flux()
    base = _forward(model, inputs)
    _add_lora(model, "a", 1)
    _add_lora(model, "b", 2)
    references = {}
    for case, adapters in ADAPTER_CASES.items():
        model.set_adapters(*adapters)
        references[case] = _forward(model, inputs)
    assert rel_err(references["a"], base) > 100 * FP32_TOL  # the adapters change the output
    b_weights = {f"transformer.{k}": v.clone() for k, v in get_peft_model_state_dict(model, adapter_name="b").items()}

    errors = {}
    model, inputs = tiny_models.tiny_flux()
    _add_lora(model, "a", 1)  # before enable
    enable_parallelism(model, make_config(ring, ulysses))
    errors["a, added before enable"] = rel_err(_forward(model, inputs), references["a"])
    _add_lora(model, "b", 2)  # after enable: peft wraps to_q, ... of a model with hooks
    for case, adapters in ADAPTER_CASES.items():
        model.set_adapters(*adapters)
        errors[f"set_adapters {case}"] = rel_err(_forward(model, inputs), references[case])
    model.set_adapters("a")
    model.load_lora_adapter(b_weights, adapter_name="a", hotswap=True, prefix="transformer")
    errors["a hot-swapped to b's weights"] = rel_err(_forward(model, inputs), references["b"])
    disable_parallelism(model)
    assert torch.equal(_forward(model, inputs), references["b"])

    # Adapters on a module the plan hooks (Flux's proj_out gathers the tokens), added after enable: peft puts a
    # wrapper in proj_out's place, and the plan's gather follows it at the next forward. Switching, fusing and
    # unloading adapters between calls, as a service does per request.
    plan_targets = {"c": ["proj_out"], "d": ["proj_out", "to_q"]}
    model, inputs = tiny_models.tiny_flux()
    for seed, (name, targets) in enumerate(plan_targets.items(), start=3):
        _add_lora(model, name, seed, targets=targets)
    references = {}
    for case, adapters in {"c": ("c",), "d": ("d",), "c+d": (["c", "d"], [0.5, 1.0])}.items():
        model.set_adapters(*adapters)
        references[case] = _forward(model, inputs)
    assert rel_err(references["c"], base) > 100 * FP32_TOL
    model, inputs = tiny_models.tiny_flux()
    enable_parallelism(model, make_config(ring, ulysses))
    errors["no adapter yet"] = rel_err(_forward(model, inputs), base)
    for seed, (name, targets) in enumerate(plan_targets.items(), start=3):
        _add_lora(model, name, seed, targets=targets)
    for case, adapters in {"c": ("c",), "d": ("d",), "c+d": (["c", "d"], [0.5, 1.0]), "c again": ("c",)}.items():
        model.set_adapters(*adapters)
        errors[f"proj_out adapters after enable: {case}"] = rel_err(_forward(model, inputs),
                                                                    references[case.removesuffix(" again")])
    model.set_adapters("d")
    model.fuse_lora()
    errors["d fused"] = rel_err(_forward(model, inputs), references["d"])
    model.unfuse_lora()
    model.unload_lora()  # peft puts the original proj_out back: the gather follows it again
    errors["adapters unloaded"] = rel_err(_forward(model, inputs), base)
    disable_parallelism(model)
    assert not any(hasattr(m, "_cp_hook_registry") for m in model.modules())  # disable found every moved hook
    return errors


def test_lora(pool):
    pytest.importorskip("peft")
    for ring, ulysses in MODES:
        for errors in pool(2).run(lora_parity, ring, ulysses, timeout=120):
            for case, err in errors.items():
                assert err <= FP32_TOL, f"ring {ring} ulysses {ulysses} {case}: {err:.2e}"


# --- offloading and layerwise casting on the model ---


def _offloads() -> dict:
    import accelerate

    return {
        "group offload, block_level": lambda m: m.enable_group_offload(CPU, CPU, offload_type="block_level",
                                                                        num_blocks_per_group=1),
        "group offload, leaf_level": lambda m: m.enable_group_offload(CPU, CPU, offload_type="leaf_level"),
        "accelerate cpu_offload": lambda m: accelerate.cpu_offload(m, execution_device=CPU),
        "accelerate cpu_offload_with_hook": lambda m: accelerate.cpu_offload_with_hook(m, execution_device=CPU),
        "layerwise casting, fp8 storage": lambda m: m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                                                compute_dtype=torch.float32),
        "layerwise casting, bf16 storage": lambda m: m.enable_layerwise_casting(storage_dtype=torch.bfloat16,
                                                                                 compute_dtype=torch.float32),
    }


def offload_parity(ring: int, ulysses: int) -> dict:
    errors = {}
    config = make_config(ring, ulysses)
    for name, apply in _offloads().items():
        model, inputs = tiny_models.tiny_flux()
        apply(model)
        reference = _forward(model, inputs)
        for order in ORDERS:
            model, inputs = tiny_models.tiny_flux()
            apply_around_enable(model, config, apply, order)
            try:
                errors[f"{name}, {order}"] = rel_err(_forward(model, inputs), reference)
            finally:
                disable_parallelism(model)
            assert torch.equal(_forward(model, inputs), reference), f"{name}, {order}: not restored"
    return errors


def pipeline_cpu_offload_parity(ring: int, ulysses: int) -> dict:
    """`pipe.enable_model_cpu_offload(device="cpu")` (accelerate hooks on every component) around cp_hooks."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    import _tiny

    def generate(pipe):
        return pipe("a red cube", height=32, width=32, num_frames=5, num_inference_steps=2, guidance_scale=2.0,
                    max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="latent").frames

    pipe = _tiny.tiny_wan_pipeline(seed=0)
    pipe.enable_model_cpu_offload(device="cpu")
    reference = generate(pipe)
    errors = {}
    for order in ("before enable", "after enable"):
        pipe = _tiny.tiny_wan_pipeline(seed=0)
        if order == "before enable":
            pipe.enable_model_cpu_offload(device="cpu")
            enable_parallelism(pipe, make_config(ring, ulysses))
        else:
            enable_parallelism(pipe, make_config(ring, ulysses))
            pipe.enable_model_cpu_offload(device="cpu")
        errors[f"pipeline model CPU offload, {order}"] = rel_err(generate(pipe), reference)
        disable_parallelism(pipe)
    return errors


@pytest.mark.parametrize("fn", [offload_parity, pipeline_cpu_offload_parity], ids=["model", "pipeline"])
def test_offloading_and_layerwise_casting(pool, fn):
    for ring, ulysses in MODES:
        for errors in pool(2).run(fn, ring, ulysses, timeout=240):
            for case, err in errors.items():
                assert err <= FP32_TOL, f"ring {ring} ulysses {ulysses} {case}: {err:.2e}"


# --- the device an offloaded model computes on (one process, fake hooks) ---


class _Registry:
    """Stands in diffusers' HookRegistry: holds one group offloading hook."""

    def __init__(self, device) -> None:
        self.hook = SimpleNamespace(config=SimpleNamespace(onload_device=torch.device(device)))

    def get_hook(self, name):
        return self.hook if name == "group_offloading" else None


def _model_with(attribute: str | None = None, hook=None) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))  # parameters on the CPU
    if attribute is not None:
        object.__setattr__(model[1][0], attribute, hook)  # on a leaf: leaf_level offloading, accelerate's submodules
    return model


def test_device_check_reads_the_offloading_hooks():
    cuda = SimpleNamespace(device_type="cuda")
    cpu = SimpleNamespace(device_type="cpu")
    cases = {
        "accelerate": _model_with("_hf_hook", SimpleNamespace(execution_device="cuda:1")),
        "accelerate, sequential": _model_with("_hf_hook", SimpleNamespace(hooks=[
            SimpleNamespace(execution_device=None), SimpleNamespace(execution_device=torch.device("cuda", 0))])),
        "group offloading": _model_with("_diffusers_hook", _Registry("cuda:0")),
    }
    for name, model in cases.items():
        assert execution_device(model).type == "cuda", name
        _check_model_device(model, cuda)  # weights rest on the CPU, the model computes on the GPU: accepted
        with pytest.raises(ValueError, match="model is on cuda.*communicates on 'cpu'"):
            _check_model_device(model, cpu)
    plain = _model_with()
    assert execution_device(plain) == CPU
    _check_model_device(plain, cpu)
    # Weights still on the CPU with a GPU mesh: offloading or .to() may follow enable; the forward checks.
    _check_model_device(plain, cuda)
    # accelerate's cpu_offload leaves the weights on `meta`: the execution device decides.
    meta = _model_with("_hf_hook", SimpleNamespace(execution_device=CPU)).to("meta")
    _check_model_device(meta, cpu)
    with pytest.raises(ValueError, match="model is on meta"):
        _check_model_device(_model_with().to("meta"), cpu)
    assert execution_device(nn.Module()) is None
    _check_model_device(nn.Module(), cuda)


def test_forward_refuses_inputs_off_the_mesh_device():
    """The input check runs before anything communicates: CPU inputs with a GPU mesh (and the reverse)."""
    from cp_hooks.compat.offload import InputDeviceHook

    hook = InputDeviceHook(SimpleNamespace(device_type="cuda"))
    with pytest.raises(ValueError, match="inputs are on cpu but the context-parallel mesh communicates on 'cuda'"):
        hook.pre_forward(None, (torch.ones(2),), {})
    with pytest.raises(ValueError, match="inputs are on cpu"):
        hook.pre_forward(None, (), {"timestep": torch.tensor([1]), "hidden_states": torch.ones(2)})
    cpu_hook = InputDeviceHook(SimpleNamespace(device_type="cpu"))
    args, kwargs = (torch.ones(2),), {"mask": torch.ones(2, dtype=torch.bool)}
    assert cpu_hook.pre_forward(None, args, kwargs) == (args, kwargs)
    # One input on the mesh's device is enough: a stray tensor elsewhere (here on meta) is not refused.
    kwargs = {"guidance": torch.ones(1, device="meta"), "hidden_states": torch.ones(2)}
    assert cpu_hook.pre_forward(None, (), kwargs) == ((), kwargs)


def test_device_check_with_diffusers_group_offloading():
    model, _ = tiny_models.tiny_flux()
    model.enable_group_offload(CPU, CPU, offload_type="leaf_level")
    assert execution_device(model) == CPU
    model, _ = tiny_models.tiny_flux()
    # Onload on a GPU (never reached here: nothing is onloaded before a forward), weights on the CPU.
    model.enable_group_offload(torch.device("cuda", 0), CPU, offload_type="block_level", num_blocks_per_group=1)
    assert execution_device(model) == torch.device("cuda", 0) and next(model.parameters()).device == CPU
    _check_model_device(model, SimpleNamespace(device_type="cuda"))

"""The device an offloaded model computes on.

With offloading the weights rest on one device (the CPU, or `meta` with accelerate's `cpu_offload`) and are
moved to another for each forward. `enable_parallelism` checks the device the model computes on against the
mesh's, so it reads that device from the offloading hooks:

* diffusers' group offloading: a `group_offloading` hook in a module's `_diffusers_hook` registry, with its
  `onload_device` (on the model itself for block_level, on its leaves for leaf_level);
* accelerate's hooks (`cpu_offload`, `cpu_offload_with_hook`, the pipelines' model CPU offload, a device map):
  a module's `_hf_hook` (or the hooks of a `SequentialHook`) with an `execution_device`.

Without any of them, it is the device of the first parameter. A model whose weights are still on the CPU is
accepted on a GPU mesh (offloading or `.to()` may come after enable); `InputDeviceHook` then checks, at each
forward and before any collective, that the inputs are on the mesh's device.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cp_hooks.forward.hooks import ModelHook

_GROUP_OFFLOADING = "group_offloading"  # diffusers.hooks.group_offloading._GROUP_OFFLOADING


def _as_device(device) -> torch.device:
    if isinstance(device, int):  # accelerate: an accelerator index
        accelerator = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        return torch.device(accelerator.type if accelerator is not None else "cuda", device)
    return torch.device(device)


def _hook_device(module: nn.Module) -> torch.device | None:
    registry = module.__dict__.get("_diffusers_hook")
    hook = registry.get_hook(_GROUP_OFFLOADING) if registry is not None and hasattr(registry, "get_hook") else None
    if hook is not None:
        for owner in (getattr(hook, "config", None), getattr(hook, "group", None)):
            device = getattr(owner, "onload_device", None)
            if device is not None:
                return _as_device(device)
    hf_hook = module.__dict__.get("_hf_hook")
    for hook in getattr(hf_hook, "hooks", None) or ([hf_hook] if hf_hook is not None else []):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return _as_device(device)
    return None


def execution_device(model: nn.Module) -> torch.device | None:
    """The device `model` computes on: its offloading hooks' onload / execution device, else its first parameter's.

    None for a model without parameters or hooks.
    """
    for module in model.modules():
        device = _hook_device(module)
        if device is not None:
            return device
    param = next(model.parameters(), None)
    return None if param is None else param.device


def _floating_tensors(args, kwargs) -> list[torch.Tensor]:
    return [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor) and v.is_floating_point()]


class InputDeviceHook(ModelHook):
    """On the model, before anything that communicates: the inputs are on the device the mesh communicates on
    (at least one floating-point tensor input is).

    Every rank runs the same script, so every rank raises, and none enters a collective with tensors the
    backend cannot send (CPU tensors to nccl, GPU tensors to gloo).
    """

    # Traced (not `eager`): a device test is static under torch.compile (a guard), and an eager hook breaks the
    # graph where dynamo inlines the model's call (a model called inside another compiled module's forward).

    def __init__(self, runtime=None) -> None:
        self.runtime = runtime

    def pre_forward(self, module, args, kwargs):
        # None of them on the mesh's device: a stray small tensor elsewhere (a CPU scalar) is not the mistake.
        tensors = _floating_tensors(args, kwargs)
        if tensors and all(t.device.type != self.runtime.device_type for t in tensors):
            raise ValueError(
                f"The model's inputs are on {tensors[0].device} but the context-parallel mesh communicates on "
                f"'{self.runtime.device_type}'. Put the model and its inputs on the process group's device (e.g. "
                "cuda:{local_rank} with nccl; with offloading, its onload / execution device), or initialise the "
                "process group with a backend for that device."
            )
        return args, kwargs

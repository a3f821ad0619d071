"""The device an offloaded model computes on.

With offloading the weights rest on one device (the CPU, or `meta` with accelerate's `cpu_offload`) and are
moved to another for each forward. `enable_parallelism` checks the device the model computes on against the
mesh's, so it reads that device from the offloading hooks:

* diffusers' group offloading: a `group_offloading` hook in a module's `_diffusers_hook` registry, with its
  `onload_device` (on the model itself for block_level, on its leaves for leaf_level);
* accelerate's hooks (`cpu_offload`, `cpu_offload_with_hook`, the pipelines' model CPU offload, a device map):
  a module's `_hf_hook` (or the hooks of a `SequentialHook`) with an `execution_device`.

Without any of them, it is the device of the first parameter.
"""

from __future__ import annotations

import torch
import torch.nn as nn

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

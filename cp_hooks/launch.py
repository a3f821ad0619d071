"""Process-group start-up for scripts launched with `accelerate launch` or `torchrun`.

The library itself needs only an initialised process group; this helper makes one from the launcher's
environment with the right backend (nccl on GPUs, gloo on CPU) and returns the device to use.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init_distributed(cpu: bool | None = None, timeout_s: float = 600.0) -> torch.device:
    """Initialise the default process group from the launcher's environment, if needed; return the device.

    Args:
        cpu: force CPU + gloo; default: CPU when no GPU is available.
        timeout_s: collective timeout, after which a stuck rank raises instead of hanging.

    Returns:
        `cuda:LOCAL_RANK` with nccl, else `cpu` with gloo.

    Raises:
        RuntimeError: not started by a launcher (no RANK / WORLD_SIZE in the environment).
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError(
                "No launcher environment (RANK, WORLD_SIZE). Start the script with `accelerate launch "
                "--num_processes N` (add `--multi_gpu` for N CPU processes on a machine without GPUs) or "
                "`torchrun --nproc_per_node N`."
            )
        dist.init_process_group("gloo" if cpu else "nccl", timeout=datetime.timedelta(seconds=timeout_s))
    if cpu:
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)

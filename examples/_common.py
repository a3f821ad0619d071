"""What the example scripts share: parallel options, process group and mesh set-up, rank-0 output, timing.

The scripts run under `accelerate launch`, `torchrun`, or any launcher that sets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT; accelerate is only the launcher here, nothing below needs it at runtime.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cp_hooks import ContextParallelConfig, init_distributed, shutdown_distributed

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# max |context parallel - single process| / max(1, max |single process|) per dtype (docs/architecture.md: fp32 1e-5).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """Options every script takes: degrees of the mesh, ring rotation, anything modes, dtype, seed."""
    g = p.add_argument_group("parallelism")
    g.add_argument("--dp", type=int, default=1, help="data-parallel groups; each gets its own prompt / batch")
    g.add_argument("--cfg-degree", type=int, default=1,
                   help="classifier-free-guidance groups: the conditional and unconditional passes run at the "
                        "same time on 2 groups (each with ring x ulysses ranks)")
    g.add_argument("--ring", type=int, default=1, help="ring degree")
    g.add_argument("--ulysses", type=int, default=None,
                   help="Ulysses degree (default: world size / (dp * ring))")
    g.add_argument("--rotate-method", choices=["allgather", "alltoall"], default="allgather",
                   help="ring: gather all key/value shards at once, or pass one at a time around the ring")
    g.add_argument("--anything", action="store_true",
                   help="allow sequence lengths / head counts the degrees do not divide (anything modes)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--seed", type=int, default=0, help="the same on every rank")


@dataclass
class Parallel:
    """The process's place in the (dp, cfg, ring, ulysses) mesh."""

    device: torch.device
    config: ContextParallelConfig
    rank: int  # global rank
    world: int
    dp_rank: int
    dp_size: int
    dp_group: object  # the data-parallel process group (None when dp_size == 1)

    @property
    def is_main(self) -> bool:
        """Global rank 0: prints and logs."""
        return self.rank == 0

    @property
    def is_group_main(self) -> bool:
        """Rank 0 of this data-parallel group (its first cfg group's first context-parallel rank): saves."""
        return self.config.rank == 0 and self.config.runtime.cfg_rank == 0


def setup_parallel(args) -> Parallel:
    """Start the process group (nccl on GPUs, gloo on CPU) and build the (dp, cfg, ring, ulysses) mesh.

    Raises:
        SystemExit: degrees whose product is not the world size (the message gives the product).
    """
    _quiet_other_ranks()
    device = init_distributed()
    if device.type == "cpu":
        # Ranks on one machine share its cores: without this each would start one thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    world, rank = dist.get_world_size(), dist.get_rank()
    cfg = getattr(args, "cfg_degree", 1)
    ulysses = args.ulysses or world // (args.dp * cfg * args.ring)
    if args.dp * cfg * args.ring * ulysses != world:
        raise SystemExit(f"dp ({args.dp}) * cfg ({cfg}) * ring ({args.ring}) * ulysses ({ulysses}) = "
                         f"{args.dp * cfg * args.ring * ulysses} != world size ({world}); launch that many processes "
                         "or change the degrees.")
    flags = dict(rotate_method=args.rotate_method, ulysses_anything=args.anything and ulysses > 1,
                 ring_anything=args.anything and args.ring > 1)
    if args.dp == 1:
        config = ContextParallelConfig(ring_degree=args.ring, ulysses_degree=ulysses, cfg_degree=cfg, **flags)
        return Parallel(device, config.setup(), rank, world, 0, 1, None)
    # An extra outer "dp" dimension: each dp group is a full (cfg x ring x ulysses) group.
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (args.dp, cfg, args.ring, ulysses),
                            mesh_dim_names=("dp", "cfg", "ring", "ulysses"))
    config = ContextParallelConfig(mesh=mesh, **flags).setup()
    return Parallel(device, config, rank, world, mesh["dp"].get_local_rank(), args.dp, mesh["dp"].get_group())


def _quiet_other_ranks() -> None:
    """Only global rank 0 logs: warnings and progress bars from N ranks would interleave."""
    if int(os.environ.get("RANK", "0")) == 0:
        return
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def print0(*args, **kwargs) -> None:
    """print on global rank 0 only."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, **kwargs, flush=True)


def finish(ok: bool) -> int:
    """End a script: wait for every rank, tear the process group down, exit 0 on a pass and 1 on a failure."""
    print0("done")
    shutdown_distributed()
    return 0 if ok else 1


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(1, max |expected|), in float64."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    return (actual - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest `value` over all ranks (a collective: every rank must call it)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def gather_floats(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's `values` (same length everywhere), indexed by global rank."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.tolist() for o in out]


class StepTimer:
    """A pipeline `callback_on_step_end` that records when each denoising step ends, and the last latents.

    `seconds_per_step` is the median step time from the second step on (the first also pays for
    warm-up), or the single step's time when there is one. `latents` (the denoised latents before the
    VAE) are kept because they are the transformer's direct result: a decoded image can hide differences.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []
        self.latents: torch.Tensor | None = None

    def start(self) -> None:
        self._sync()
        self.marks = [time.perf_counter()]

    def __call__(self, pipe, step, timestep, callback_kwargs):
        self._sync()
        self.marks.append(time.perf_counter())
        self.latents = callback_kwargs["latents"].detach().float().cpu()
        return callback_kwargs

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def seconds_per_step(self) -> float:
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return statistics.median(steps[1:]) if len(steps) > 1 else steps[0]

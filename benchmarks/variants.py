"""The variants run side by side: one process, every cp_hooks mode that fits the world, diffusers' own CP.

A variant turns a model on and off (`enter` / `exit`) so that the timing loop can alternate between them
on one model; the configs (and their process groups) are made once. diffusers' `enable_parallelism` has no
inverse, so its variant runs on its own copy of the model, enabled once. A compiled variant (`compiled_modes`)
also has its own copy, enabled once and compiled once: switching hooks on a compiled model would change the
code dynamo traced, and every switch would recompile.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch._dynamo
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from cp_hooks import ContextParallelConfig, disable_parallelism, enable_parallelism
from cp_hooks.comm import shared_memory

_MESHES: dict = {}


def _mesh(device_type: str, ring: int, ulysses: int):
    # One mesh (and its process groups) per shape for the whole run: groups are not free to create.
    key = (device_type, ring, ulysses)
    if key not in _MESHES:
        _MESHES[key] = init_device_mesh(device_type, (ring, ulysses), mesh_dim_names=("ring", "ulysses"))
    return _MESHES[key]


@dataclass
class Mode:
    """One way to run: `kind` is "single", "cp_hooks" or "diffusers"."""

    name: str
    kind: str
    ring: int = 1
    ulysses: int = 1
    rotate_method: str = "allgather"
    transport: str = "default"  # "gloo": the Ulysses all-to-alls kept on gloo (CPU), to compare with shared memory
    config: object = field(default=None, repr=False)
    compile_backend: str | None = None  # set: this mode's own copy of the model, under torch.compile(backend=...)
    comm_dtype: object = None  # ContextParallelConfig.comm_dtype: what attention's tensors travel in
    comm_fp8_keys: bool = False

    @property
    def compiled(self) -> bool:
        return self.compile_backend is not None

    @property
    def eager_name(self) -> str:
        """The eager variant this one compiles ("ulysses" for "ulysses-compiled")."""
        return self.name.removesuffix(COMPILED_SUFFIX)

    @property
    def label(self) -> str:
        compiled = f", torch.compile ({self.compile_backend})" if self.compiled else ""
        if self.kind == "single":
            return "one process" + compiled
        method = f", {self.rotate_method}" if self.ring > 1 else ""
        over = ", all-to-all over gloo" if self.transport == "gloo" else ""
        if self.comm_dtype is not None:
            fp8 = self.comm_dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
            keys = (", fp8 keys" if self.comm_fp8_keys else ", bf16 keys") if fp8 else ""
            over += f", {str(self.comm_dtype).removeprefix('torch.')} communication{keys}"
        return f"{self.kind}: ring {self.ring} x ulysses {self.ulysses}{method}{over}{compiled}"

    def wrap(self, run):
        """`run` with this mode's transport: a gloo variant pins its Ulysses group to gloo for the call only."""
        if self.transport != "gloo":
            return run
        group = self.config.runtime.ulysses_group

        def on_gloo():
            shared_memory.keep_gloo(group)  # every rank runs the same variant at the same time: they agree
            try:
                return run()
            finally:
                shared_memory.keep_gloo(group, keep=False)
        return on_gloo

    def transport_used(self) -> dict:
        """How this mode's Ulysses all-to-alls travelled, and the shared memory they hold per rank."""
        if self.kind != "cp_hooks" or self.ulysses == 1:
            return {}
        group = self.config.runtime.ulysses_group
        if self.transport == "gloo":
            return {"transport": "gloo (kept for comparison)"}
        if self.compiled:
            # The eager mode of the same shape shares the group and reads (and resets) its largest send.
            return {"transport": shared_memory.describe(group)}
        # What this workload put in the shared buffer at most (the buffer itself keeps its largest size).
        return {"transport": shared_memory.describe(group),
                "shared_bytes": shared_memory.largest_send_bytes(group, reset=True)}


def cp_modes(world: int, heads: int, device_type: str) -> list[Mode]:
    """Every cp_hooks mode that fits `world` ranks (Ulysses needs heads divisible by its degree)."""
    modes = []
    if world > 1 and heads % world == 0:
        modes.append(Mode("ulysses", "cp_hooks", 1, world))
        if device_type == "cpu":  # the same mode with gloo's all-to-all, to show what shared memory gives
            modes.append(Mode("ulysses-gloo", "cp_hooks", 1, world, transport="gloo"))
    if world > 1:
        modes.append(Mode("ring-allgather", "cp_hooks", world, 1, "allgather"))
        modes.append(Mode("ring-alltoall", "cp_hooks", world, 1, "alltoall"))
    for ring in range(2, world):
        uly = world // ring
        if ring * uly == world and uly > 1 and heads % uly == 0:
            modes.append(Mode(f"hybrid-r{ring}u{uly}", "cp_hooks", ring, uly, "alltoall"))
    # Lower-precision communication (docs/comm_precision.md) beside full precision, in the same launch: the
    # model's own dtype against bf16 and fp8 payloads (fp8 with bf16 keys for Ulysses, fp8 keys for the ring).
    if world > 1 and heads % world == 0:
        modes.append(Mode("ulysses-bf16comm", "cp_hooks", 1, world, comm_dtype=torch.bfloat16))
        modes.append(Mode("ulysses-fp8comm", "cp_hooks", 1, world, comm_dtype=torch.float8_e4m3fn))
    if world > 1:
        modes.append(Mode("ring-alltoall-fp8comm", "cp_hooks", world, 1, "alltoall", comm_dtype=torch.float8_e4m3fn,
                          comm_fp8_keys=True))
    for m in modes:
        m.config = ContextParallelConfig(ring_degree=m.ring, ulysses_degree=m.ulysses, rotate_method=m.rotate_method,
                                         comm_dtype=m.comm_dtype, comm_fp8_keys=m.comm_fp8_keys)
        m.config.setup(_mesh(device_type, m.ring, m.ulysses))
    return modes


COMPILED_SUFFIX = "-compiled"


def compiled_modes(modes: list[Mode], device_type: str, backend: str) -> list[Mode]:
    """The compiled counterpart of one process, of every cp_hooks mode, and of diffusers' Ulysses.

    `ulysses-gloo` is left out (it differs from `ulysses` only in the transport, compiled or not), and so are the
    lower-precision communication variants (`-bf16comm`, `-fp8comm`) and
    diffusers' ring (its eager forward already fails on CPU: diffusers' native attention returns no
    log-sum-exp). A cp_hooks mode gets its own config on the same mesh: the eager mode's runtime carries
    per-forward state (the split lengths), and the two models are enabled at the same time.
    """
    out = []
    for m in modes:
        if m.transport == "gloo" or m.name == "diffusers-ring" or m.comm_dtype is not None:
            continue  # (the comm_dtype variants: compiled in tests/test_comm_precision.py, not timed compiled)
        c = Mode(m.name + COMPILED_SUFFIX, m.kind, m.ring, m.ulysses, m.rotate_method, compile_backend=backend)
        if m.kind == "cp_hooks":
            c.config = ContextParallelConfig(ring_degree=m.ring, ulysses_degree=m.ulysses,
                                             rotate_method=m.rotate_method)
            c.config.setup(_mesh(device_type, m.ring, m.ulysses))
        out.append(c)
    return out


def diffusers_modes(world: int, heads: int) -> list[Mode]:
    """diffusers' Ulysses (when the heads divide) and ring."""
    if world == 1:
        return []
    modes = [Mode("diffusers-ulysses", "diffusers", 1, world)] if heads % world == 0 else []
    return modes + [Mode("diffusers-ring", "diffusers", world, 1, "allgather")]


class Runner:
    """Holds a workload's model (and the diffusers and compiled copies) and switches it between modes."""

    def __init__(self, model: torch.nn.Module, modes: list[Mode]) -> None:
        self.model = model
        self.copies: dict[str, torch.nn.Module] = {}
        self.failed: dict[str, str] = {}
        if any(m.compiled for m in modes):
            # Every instance of a model class shares its forward's code object, and each compiled copy adds a
            # cache entry to it: without a reset, the copies of earlier workloads would count towards the
            # recompile limit (beyond it dynamo silently runs the frame eagerly).
            torch._dynamo.reset()
        for m in modes:
            if m.kind != "diffusers" and not m.compiled:
                continue
            try:
                # Copied before any hook is on `model` (a hooked module refuses deepcopy).
                twin = copy.deepcopy(model)
                if m.kind == "diffusers":
                    twin = enable_diffusers_cp(twin, m)
                elif m.kind == "cp_hooks":
                    twin = enable_parallelism(twin, m.config)
                if m.compiled:
                    # dynamic=False: static shapes, as each workload has one. Otherwise the copies, which share
                    # a code object, would see each other's shapes (one process' full sequence, a rank's shard)
                    # and dynamo's automatic dynamic shapes would compile later copies for symbolic lengths.
                    twin = torch.compile(twin, backend=m.compile_backend, dynamic=False)
                self.copies[m.name] = twin
            except Exception as e:  # recorded as the result of this variant
                self.failed[m.name] = f"{type(e).__name__}: {e}"

    def model_for(self, mode: Mode) -> torch.nn.Module:
        return self.copies.get(mode.name, self.model)

    def enter(self, mode: Mode) -> torch.nn.Module:
        if mode.kind == "cp_hooks" and not mode.compiled:
            enable_parallelism(self.model, mode.config)
        return self.model_for(mode)

    def exit(self, mode: Mode) -> None:
        if mode.kind == "cp_hooks" and not mode.compiled:
            disable_parallelism(self.model)


def enable_diffusers_cp(model: torch.nn.Module, mode: Mode) -> torch.nn.Module:
    """diffusers' `ModelMixin.enable_parallelism` with its own ContextParallelConfig.

    On CPU, diffusers computes `rank % torch.accelerator.device_count()`, which is 0 without an accelerator
    (ZeroDivisionError); it is reported as 1 for the duration of the call, the one patch it needs.
    """
    from diffusers.models._modeling_parallel import ContextParallelConfig as DiffusersCPConfig

    config = DiffusersCPConfig(ring_degree=mode.ring if mode.ring > 1 else None,
                               ulysses_degree=mode.ulysses if mode.ulysses > 1 else None,
                               rotate_method=mode.rotate_method)
    patched = not torch.cuda.is_available() and torch.accelerator.device_count() == 0
    original = torch.accelerator.device_count
    if patched:
        torch.accelerator.device_count = lambda: 1
    try:
        model.enable_parallelism(config=config)
    finally:
        torch.accelerator.device_count = original
    dist.barrier()
    return model

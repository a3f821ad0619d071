"""`ContextParallelConfig`: degrees, validation, and binding to a process group / device mesh.

The config is pure data until `setup()` binds it to the current process group. Everything that can be
checked without communicating (degrees, flags, world size, mesh shape) is checked here, so that a bad
config fails on every rank with the same message before any collective is issued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist

from cp_hooks.comm.precision import normalize_comm_dtype
from cp_hooks.runtime import ContextParallelRuntime, DegreeFacts

_ROTATE_METHODS = ("allgather", "alltoall")
MESH_DIM_NAMES = ("ring", "ulysses")
# The default mesh: classifier-free-guidance groups outermost, Ulysses innermost (contiguous ranks, one node).
DEFAULT_MESH_DIM_NAMES = ("cfg", "ring", "ulysses")

LAUNCH_HINT = (
    "Launch with `accelerate launch --num_processes N script.py` (add `--multi_gpu` to start N CPU processes "
    "on a machine without GPUs) or `torchrun --nproc_per_node N script.py`, and call "
    "`torch.distributed.init_process_group()` (or create `accelerate.PartialState()`) before enabling "
    "context parallelism."
)


@dataclass
class ContextParallelConfig(DegreeFacts):
    """How one sample's sequence is split across processes, and how attention is computed over it.

    Field names, meanings and defaults follow diffusers' class of the same name.

    Args:
        ring_degree: ranks that pass key/value shards around a ring (`None` means 1).
        ulysses_degree: ranks that exchange sequence for heads with all-to-all (`None` means 1).
            The context-parallel group has `ring_degree * ulysses_degree` ranks; ulysses is the inner
            (contiguous-rank) mesh dimension.
        convert_to_fp32: merge ring partial results (output and log-sum-exp) in float32.
        rotate_method: `"allgather"` gathers every key/value shard once, then loops over them;
            `"alltoall"` is a true ring: each step sends one shard to the next rank while computing on the
            current one, so a rank holds at most its own shard plus two in flight.
        ulysses_anything: allow sequence lengths and head counts that `ulysses_degree` does not divide.
        ring_anything: allow sequence lengths that `ring_degree` does not divide.
        cfg_degree: groups of ranks that each take an equal part of the batch (`None` means 1): with batched
            classifier-free guidance (conditional and unconditional inputs stacked in one batch), each group
            runs one of them, with context parallelism inside the group; the output is whole on every rank.
            The world (or mesh) has `cfg_degree * ring_degree * ulysses_degree` ranks; "cfg" is the outer
            mesh dimension. cp_hooks-only (diffusers' config has no such field).
        mesh: a `DeviceMesh` with dimensions named "ring" and "ulysses" (and "cfg" when `cfg_degree > 1`;
            others may exist, e.g. "dp"); built by `setup()` when omitted.
        comm_dtype: what attention's q, k, v and outputs travel in (Ulysses' all-to-alls, the ring's K/V
            blocks): None (default: their own dtype), `torch.bfloat16` / `torch.float16` (a plain cast where
            it narrows), `torch.float8_e4m3fn` / `torch.float8_e5m2` (fp8 with one fp32 scale per token and
            head). Gradients travel in the model's precision. cp_hooks-only; see docs/comm_precision.md and
            `cp_hooks.comm.precision`.
        comm_fp8_keys: with an fp8 `comm_dtype`, send the keys in fp8 too (default: keys travel in bf16).

    Raises:
        ValueError: on degrees below 1, all degrees 1, an unknown `rotate_method`, an anything flag
            whose degree is 1, an unsupported `comm_dtype`, or `comm_fp8_keys` without an fp8 `comm_dtype`.

    Example:
        >>> config = ContextParallelConfig(ulysses_degree=2)
        >>> config.world_size
        2
    """

    # The degrees take None (from the mesh, else 1); __post_init__ makes each an int, as DegreeFacts declares.
    ring_degree: int | None = None  # type: ignore[assignment]
    ulysses_degree: int | None = None  # type: ignore[assignment]
    convert_to_fp32: bool = True
    rotate_method: Literal["allgather", "alltoall"] = "allgather"
    ulysses_anything: bool = False
    ring_anything: bool = False
    mesh: dist.device_mesh.DeviceMesh | None = None
    cfg_degree: int | None = None  # type: ignore[assignment]
    comm_dtype: torch.dtype | None = None
    comm_fp8_keys: bool = False

    # Bound by setup(); not part of the user-facing fields.
    _runtime: ContextParallelRuntime | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mesh is not None:
            self._fill_degrees_from_mesh(self.mesh)
        self.ring_degree = 1 if self.ring_degree is None else self.ring_degree
        self.ulysses_degree = 1 if self.ulysses_degree is None else self.ulysses_degree
        self.cfg_degree = 1 if self.cfg_degree is None else self.cfg_degree
        for name in ("ring_degree", "ulysses_degree", "cfg_degree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).")
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}. Use 1 to leave that dimension unused.")
        if self.ring_degree == 1 and self.ulysses_degree == 1 and self.cfg_degree == 1 and self.mesh is None:
            # A mesh whose dimensions are all 1 is a deliberate one-rank run (the same script on one GPU, or a
            # CUDA-graph check of the context-parallel path); degrees that are all 1 by default are a mistake.
            raise ValueError(
                "`ring_degree`, `ulysses_degree` and `cfg_degree` are all 1, so there is nothing to parallelize. "
                "Set one of them to the number of processes, e.g. ContextParallelConfig(ulysses_degree=2)."
            )
        if self.rotate_method not in _ROTATE_METHODS:
            raise ValueError(
                f"Unknown `rotate_method` {self.rotate_method!r}; choose one of {_ROTATE_METHODS}: 'allgather' "
                "gathers all key/value shards at once, 'alltoall' passes one shard at a time around the ring."
            )
        if self.ulysses_anything and self.ulysses_degree == 1:
            raise ValueError(
                "`ulysses_anything=True` needs `ulysses_degree > 1`; with ring attention only, use "
                "`ring_anything=True` instead."
            )
        if self.ring_anything and self.ring_degree == 1:
            raise ValueError(
                "`ring_anything=True` needs `ring_degree > 1`; with Ulysses attention only, use "
                "`ulysses_anything=True` instead."
            )
        self.comm_dtype = normalize_comm_dtype(self.comm_dtype, self.comm_fp8_keys)

    def _fill_degrees_from_mesh(self, mesh) -> None:
        names = mesh.mesh_dim_names or ()
        missing = [n for n in MESH_DIM_NAMES if n not in names]
        if missing:
            raise ValueError(
                f"The mesh must have dimensions named 'ring' and 'ulysses' (size 1 for an unused one); it has "
                f"{tuple(names)}. Build it with e.g. init_device_mesh(device_type, (dp, ring, ulysses), "
                "mesh_dim_names=('dp', 'ring', 'ulysses'))."
            )
        if "cfg" not in names and self.cfg_degree not in (None, 1):
            raise ValueError(
                f"`cfg_degree`={self.cfg_degree} needs a mesh dimension named 'cfg'; the mesh has {tuple(names)}. "
                "Build it with e.g. init_device_mesh(device_type, (cfg, ring, ulysses), "
                "mesh_dim_names=('cfg', 'ring', 'ulysses'))."
            )
        dims = (("cfg", "cfg_degree"),) if "cfg" in names else ()
        for dim_name, attr in dims + (("ring", "ring_degree"), ("ulysses", "ulysses_degree")):
            size = mesh[dim_name].size()
            given = getattr(self, attr)
            if given is not None and given != size:
                raise ValueError(f"`{attr}`={given} contradicts the mesh's '{dim_name}' dimension of size {size}.")
            setattr(self, attr, size)

    # ------------------------------------------------------------------ derived facts
    @property
    def is_setup(self) -> bool:
        """True once `setup()` has bound the config to a process group."""
        return self._runtime is not None

    @property
    def runtime(self) -> ContextParallelRuntime:
        """What `setup()` bound: mesh, groups, ranks, device (a snapshot of the fields at that time)."""
        self._require_setup()
        assert self._runtime is not None  # _require_setup raised otherwise
        return self._runtime

    @property
    def rank(self) -> int:
        """This process's rank in the flattened ("ring", "ulysses") group; it holds shard `rank`."""
        return self.runtime.rank

    @property
    def device_type(self) -> str:
        """Device type of the mesh ("cpu" for gloo, "cuda" for nccl)."""
        return self.runtime.device_type

    def _require_setup(self) -> None:
        if not self.is_setup:
            raise RuntimeError(
                "This ContextParallelConfig is not set up. Call `config.setup()` inside an initialised process "
                "group, or pass it to `enable_parallelism(model, config)`, which does."
            )

    # ------------------------------------------------------------------ binding
    def setup(self, mesh=None) -> ContextParallelConfig:
        """Bind the config to the current process group and build (or adopt) the device mesh.

        The binding is a `ContextParallelRuntime` (`config.runtime`), a snapshot of the fields: a model
        enabled with this config keeps its runtime even if the config is changed or set up again later.
        Idempotent: a second call with no new mesh does nothing. Every check runs on every rank before
        the first collective (mesh creation), so a bad setup raises the same error everywhere.

        Args:
            mesh (DeviceMesh | None): optional mesh with "ring" and "ulysses" dimensions; overrides `self.mesh`.

        Returns:
            self, set up.

        Raises:
            RuntimeError: no initialised process group.
            ValueError: degrees that do not fit the world size or the mesh.
        """
        if mesh is None and self.is_setup:
            return self
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"Context parallelism needs an initialised torch.distributed process group. {LAUNCH_HINT}"
            )
        mesh = mesh if mesh is not None else self.mesh
        world = dist.get_world_size()
        if mesh is None:
            degrees: DegreeFacts = self  # the degrees as ints, which __post_init__ made them
            if self.total_ranks != world:
                cfg = f"cfg_degree ({self.cfg_degree}) * " if degrees.cfg_degree > 1 else ""
                raise ValueError(
                    f"{cfg}ring_degree ({self.ring_degree}) * ulysses_degree ({self.ulysses_degree}) = "
                    f"{self.total_ranks} != world size ({world}). Launch {self.total_ranks} processes, change the "
                    "degrees so that their product is the world size, or pass a mesh with extra dimensions "
                    "(e.g. 'dp') as `mesh=`."
                )
            from torch.distributed.device_mesh import init_device_mesh

            # Ulysses innermost: on several machines its all-to-alls stay within a node (contiguous local
            # ranks); the ring and the cfg groups span nodes.
            shape = (degrees.cfg_degree, degrees.ring_degree, degrees.ulysses_degree)
            mesh = init_device_mesh(_device_type_of_process_group(), shape, mesh_dim_names=DEFAULT_MESH_DIM_NAMES)
        else:
            self._fill_degrees_from_mesh(mesh)
        self._runtime = ContextParallelRuntime.bind(self, mesh)
        return self


def _device_type_of_process_group() -> str:
    """The device the default process group communicates on: cuda for nccl, cpu for gloo."""
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return "cuda"
    if backend in ("gloo", "cpu:gloo") or not torch.cuda.is_available():
        return "cpu"
    return "cuda"

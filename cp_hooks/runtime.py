"""`ContextParallelRuntime`: what `ContextParallelConfig.setup()` binds — mesh, groups, ranks, device.

The config is plain data a user may change or set up again on another mesh; the runtime is a frozen
snapshot of it bound to process groups. `enable_parallelism` gives its hooks and attention the runtime, so
a config changed or re-pointed afterwards never changes a model that is already enabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cp_hooks.forward.length_memo import LengthMemo
from cp_hooks.forward.lengths import SplitLengths

if TYPE_CHECKING:
    import torch
    from torch.distributed import ProcessGroup
    from torch.distributed.device_mesh import DeviceMesh


class DegreeFacts:
    """What follows from the degrees and flags: defined once, for the config and for its runtime."""

    ring_degree: int
    ulysses_degree: int
    cfg_degree: int
    ulysses_anything: bool
    ring_anything: bool

    @property
    def world_size(self) -> int:
        """Ranks in the context-parallel group: `ring_degree * ulysses_degree`."""
        return self.ring_degree * self.ulysses_degree

    @property
    def total_ranks(self) -> int:
        """Ranks that run the model together: `cfg_degree * ring_degree * ulysses_degree`."""
        return self.cfg_degree * self.world_size

    @property
    def anything(self) -> bool:
        """True when uneven sequence shards are allowed (either anything flag)."""
        return self.ulysses_anything or self.ring_anything


@dataclass(frozen=True, eq=False)
class ContextParallelRuntime(DegreeFacts):
    """The bound form of a `ContextParallelConfig` (build it with `config.setup()`; read `config.runtime`).

    Attributes:
        ring_degree, ulysses_degree, rotate_method, convert_to_fp32, ulysses_anything, ring_anything: the
            config's fields at setup time.
        mesh: the device mesh with "ring" and "ulysses" dimensions (others may exist, "cfg" among them).
        ring_group, ulysses_group, flat_group: process groups of the ring, of Ulysses, and of both
            (the context-parallel group; ulysses is the inner, contiguous-rank dimension).
        cfg_degree, cfg_group, cfg_rank: the batch groups (`ContextParallelConfig.cfg_degree`): the group of
            the ranks that hold the same tokens of different parts of the batch (None when the degree is 1),
            and this rank's part.
        world_group: every rank that runs the model together (cfg x ring x ulysses); the group over which
            parameter gradients and cache metrics are summed. The flat group when `cfg_degree` is 1.
        rank, ring_rank, ulysses_rank: this process's rank in the flat group (it holds shard `rank`), in
            the ring and in its Ulysses group.
        device_type: "cpu" for gloo, "cuda" for nccl.
        op_key, flat_group_key: integers that name this runtime and its flat group in registered
            operators' arguments (docs/architecture.md, "Compile boundary").
        split_lengths: the full lengths the plan split in the current forward (docs/architecture.md,
            "Per-rank lengths").
        length_memo: every rank's lengths of the calls of eager forwards, by input shapes (same section).
        comm_dtype, comm_fp8_keys: the config's payload precision (`cp_hooks.comm.precision`).
    """

    ring_degree: int
    ulysses_degree: int
    rotate_method: str
    convert_to_fp32: bool
    ulysses_anything: bool
    ring_anything: bool
    mesh: DeviceMesh
    ring_group: ProcessGroup
    ulysses_group: ProcessGroup
    flat_group: ProcessGroup
    rank: int
    ring_rank: int
    ulysses_rank: int
    device_type: str
    op_key: int = -1
    flat_group_key: int = -1
    split_lengths: SplitLengths = field(default_factory=SplitLengths)
    length_memo: LengthMemo = field(default_factory=LengthMemo)
    cfg_degree: int = 1
    cfg_group: ProcessGroup | None = None
    cfg_rank: int = 0
    cfg_group_key: int = -1
    world_group: ProcessGroup | None = None  # always set by `bind` (the flat group when cfg_degree is 1)
    comm_dtype: torch.dtype | None = None
    comm_fp8_keys: bool = False

    @classmethod
    def bind(cls, config, mesh) -> ContextParallelRuntime:
        """Snapshot `config` and bind it to `mesh`; registers the keys operators use (outside compiled code)."""
        from cp_hooks import comm
        from cp_hooks.attention.ops import register_runtime

        names = ("ring", "ulysses")
        ring_rank, ulysses_rank = mesh["ring"].get_local_rank(), mesh["ulysses"].get_local_rank()
        flat_group = mesh[names]._flatten().get_group()
        has_cfg = "cfg" in (mesh.mesh_dim_names or ()) and mesh["cfg"].size() > 1
        cfg_group = mesh["cfg"].get_group() if has_cfg else None
        world_group = mesh[("cfg",) + names]._flatten().get_group() if has_cfg else flat_group
        runtime = cls(
            ring_degree=config.ring_degree,
            ulysses_degree=config.ulysses_degree,
            rotate_method=config.rotate_method,
            convert_to_fp32=config.convert_to_fp32,
            ulysses_anything=config.ulysses_anything,
            ring_anything=config.ring_anything,
            mesh=mesh,
            ring_group=mesh["ring"].get_group(),
            ulysses_group=mesh["ulysses"].get_group(),
            flat_group=flat_group,
            rank=ring_rank * config.ulysses_degree + ulysses_rank,
            ring_rank=ring_rank,
            ulysses_rank=ulysses_rank,
            device_type=mesh.device_type,
            flat_group_key=comm.group_key(flat_group),
            cfg_degree=mesh["cfg"].size() if has_cfg else 1,
            cfg_group=cfg_group,
            cfg_rank=mesh["cfg"].get_local_rank() if has_cfg else 0,
            cfg_group_key=comm.group_key(cfg_group) if has_cfg else -1,
            world_group=world_group,
            comm_dtype=config.comm_dtype,
            comm_fp8_keys=config.comm_fp8_keys,
        )
        object.__setattr__(runtime, "op_key", register_runtime(runtime))
        return runtime

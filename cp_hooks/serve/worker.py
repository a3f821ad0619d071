"""What every rank runs: load and parallelize the pipeline, then execute broadcast requests in step.

A request's life on every rank (`Worker.execute`), with the three kinds of agreement point in it:

1. *prepare*: build the call's arguments and the seeded generator. Agreement: a rank that failed here must
   not let the others enter the transformer, whose collectives it would never join.
2. *each denoising step's end* (through the pipeline's `callback_on_step_end`): an error on one rank between
   two steps (a callback, a scheduler) is seen by all at the next step's end, and every rank leaves the
   pipeline at the same step.
3. *after the call*: the final verdict.

The first agreement that carries a failure decides the request for every rank, and no rank calls another
one for that request. A rank whose exception escaped the pipeline calls exactly one agreement, which pairs
with whichever agreement the others are in (a step's end or the final one): the calls are the same
all-reduce, so the ranks stay in step whatever the point of failure between collectives.

What cannot be recovered: an exception on one rank *inside* a model collective region (the transformer's or
the parallel VAE's forward) while the others wait in a collective. The others then raise after the process
group timeout (at once if the peer died); that is classified as fatal, every rank exits non-zero, and a
supervisor restarts the service.
"""

from __future__ import annotations

import datetime
import inspect
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist

from cp_hooks import ContextParallelConfig
from cp_hooks.serve.broadcast import FAILED, FATAL, OK, ControlChannel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
TINY_MODELS = ("tiny-flux", "tiny-wan")


class _Decided(Exception):
    """Raised inside the pipeline's step callback to leave the call once the ranks agreed it failed."""


class InjectedFault(RuntimeError):
    """The exception a request's `fault_injection` raises (only with `--fault-injection`)."""


@dataclass
class Outcome:
    """The result of one request on this rank.

    status: OK, FAILED (this request failed on some rank; the ranks are in step) or FATAL (a collective
    failed or timed out; the ranks can no longer be trusted to be in step). output: the pipeline's images
    (PIL) or videos (lists of PIL frames), on every rank when OK. errors: "rank r: message" for each rank
    that raised (filled on rank 0). steps, seconds: denoising steps run and wall time of the call.
    """

    status: int
    output: list | None = None
    errors: list[str] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def is_collective_error(exc: BaseException) -> bool:
    """Whether `exc` comes from a collective (timeout, closed connection, backend error): then the ranks may be
    in different collectives, and nothing but a restart puts them back in step."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text
        for marker in (
            "gloo",
            "Gloo",
            "NCCL",
            "Connection closed",
            "Connection reset",
            "Timed out",
            "timed out",
            "Broken pipe",
        )
    )


def build_pipeline(model: str, dtype: torch.dtype, device: torch.device, heads: int):
    """The pipeline of `model`: "tiny-flux" / "tiny-wan" (random weights built offline, the same on every rank),
    or a diffusers pipeline's hub id or local path (`DiffusionPipeline.from_pretrained`)."""
    if model in TINY_MODELS:
        from cp_hooks.verify import tiny_pipelines

        build = tiny_pipelines.tiny_flux_pipeline if model == "tiny-flux" else tiny_pipelines.tiny_wan_pipeline
        pipe = build(seed=0, heads=heads)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_config(
    device: torch.device,
    ulysses: int | None,
    ring: int,
    cfg: int,
    rotate_method: Literal["allgather", "alltoall"],
    anything: bool,
    timeout_s: float,
) -> ContextParallelConfig | None:
    """The context-parallel config over every rank, or None in a single process.

    The mesh is built here rather than by `ContextParallelConfig.setup()` to give the model's process groups
    the service's `--pg-timeout`: torch's default for a new group is 30 minutes on gloo (10 on nccl), which a
    hung peer would hold the survivors for.

    Raises:
        SystemExit: degrees whose product is not the world size.
    """
    world = dist.get_world_size()
    if world == 1:
        return None
    ulysses = ulysses or world // (cfg * ring)
    if cfg * ring * ulysses != world:
        raise SystemExit(
            f"cfg ({cfg}) x ring ({ring}) x ulysses ({ulysses}) = {cfg * ring * ulysses} != world size "
            f"({world}): launch that many processes or change --cfg-degree / --ring-degree / "
            "--ulysses-degree."
        )
    from torch.distributed.device_mesh import init_device_mesh

    names, shape = ("cfg", "ring", "ulysses"), (cfg, ring, ulysses)
    mesh = None
    override: dict[int | str, Any] | None
    try:
        backend = {"cpu": "gloo", "cuda": "nccl"}[device.type]
        # ProcessGroupGloo._Options exists at run time (an AttributeError is handled below); torch's stub omits it.
        options: Any = (
            dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
            if backend == "gloo"
            else dist.ProcessGroupNCCL.Options()
        )
        options._timeout = datetime.timedelta(seconds=timeout_s)
        override = {name: (backend, options) for name in names}
    except (KeyError, AttributeError, TypeError):  # another device, or a torch without these options
        override = None
    if override is not None:
        try:
            mesh = init_device_mesh(device.type, shape, mesh_dim_names=names, backend_override=override)
        except TypeError:  # torch before `backend_override`: the groups keep torch's default timeout
            mesh = None
    if mesh is None:
        mesh = init_device_mesh(device.type, shape, mesh_dim_names=names)
    return ContextParallelConfig(
        mesh=mesh,
        rotate_method=rotate_method,
        ulysses_anything=anything and ulysses > 1,
        ring_anything=anything and ring > 1,
    )


def describe_mode(config: ContextParallelConfig | None) -> str:
    """A short name of the parallel layout for `/health`: "single", "ulysses=2", "cfg=2 x ring=2(alltoall)"..."""
    if config is None:
        return "single"
    parts = []
    if (config.cfg_degree or 1) > 1:
        parts.append(f"cfg={config.cfg_degree}")
    if (config.ring_degree or 1) > 1:
        parts.append(f"ring={config.ring_degree}({config.rotate_method})")
    if (config.ulysses_degree or 1) > 1:
        parts.append(f"ulysses={config.ulysses_degree}")
    return " x ".join(parts)


class Worker:
    """Runs requests on this rank, in step with every other rank (see the module docstring).

    Args:
        pipe: the (parallelized) pipeline; the same on every rank.
        channel: the control channel for the agreements.
        device: where the pipeline runs (the generator stays on the CPU so that every rank draws the same noise).
    """

    def __init__(self, pipe, channel: ControlChannel, device: torch.device) -> None:
        self.pipe = pipe
        self.channel = channel
        self.device = device
        self.rank = channel.rank
        parameters = inspect.signature(pipe.__call__).parameters
        self.accepts = set(parameters)
        self.step_callbacks = "callback_on_step_end" in parameters

    def execute(self, message: dict) -> Outcome:
        """Run one broadcast request (`message["call"]`: the pipeline's keyword arguments, `message["seed"]`,
        `message["fault"]`); every rank calls this with the same message, and all return the same status."""
        decided = [OK]  # the agreed status once an agreement carried a failure; OK until then
        error: list[BaseException] = []
        steps = [0]
        fault = message.get("fault") or {}

        def agree(local_status: int) -> int:
            status = self.channel.agree(local_status)[0]
            if status != OK:
                decided[0] = status
            return status

        def local_failure(exc: BaseException) -> int:
            error.append(exc)
            return FATAL if is_collective_error(exc) else FAILED

        def on_step_end(pipe, step, timestep, callback_kwargs):
            steps[0] += 1
            local = OK
            try:
                if fault.get("sleep_per_step_s"):
                    time.sleep(fault["sleep_per_step_s"])
                if (
                    fault.get("raise_on_rank") == self.rank
                    and fault.get("raise_at", "step") == "step"
                    and step == fault.get("raise_at_step", 0)
                ):
                    raise InjectedFault(f"fault injected at step {step} on rank {self.rank}")
            except Exception as exc:  # noqa: BLE001 - any error is reported to the peers, then to the client
                local = local_failure(exc)
            # Agreement point 2: every rank is here between the same two steps (the model's collectives
            # keep them together), so this all-reduce pairs up; a failure anywhere stops every rank now.
            if agree(local) != OK:
                raise _Decided
            return callback_kwargs

        start = time.perf_counter()
        output = None
        local = OK
        try:
            if fault.get("raise_on_rank") == self.rank and fault.get("raise_at") == "prepare":
                raise InjectedFault(f"fault injected before the pipeline on rank {self.rank}")
            kwargs = dict(
                message["call"], generator=torch.Generator("cpu").manual_seed(message["seed"]), output_type="pil"
            )
            if self.step_callbacks:
                kwargs["callback_on_step_end"] = on_step_end
        except Exception as exc:  # noqa: BLE001
            local = local_failure(exc)
        # Agreement point 1: nobody enters the pipeline (and its collectives) unless every rank can.
        if agree(local) == OK:
            try:
                result = self.pipe(**kwargs)
                output = result.frames if hasattr(result, "frames") else result.images
                if not isinstance(output, list):  # a batch array of frames: one list of PIL frames per video
                    output = [list(video) for video in output]
            except _Decided:
                pass
            except Exception as exc:  # noqa: BLE001
                if decided[0] == OK:
                    # Agreement point 3 (or a peer's point 2): this rank's failure reaches the others.
                    agree(local_failure(exc))
                else:  # raised after an agreement already decided (should not happen): keep the verdict
                    local_failure(exc)
            else:
                if decided[0] == OK:
                    agree(OK)  # agreement point 3: every rank finished
        seconds = time.perf_counter() - start
        for failure in error:
            print(
                f"[cp_hooks serve] rank {self.rank}: request {message.get('id')} failed:\n"
                + "".join(traceback.format_exception(failure)),
                file=sys.stderr,
                flush=True,
            )
        status = decided[0]
        outcome = Outcome(status=status, output=output if status == OK else None, steps=steps[0], seconds=seconds)
        if status == FAILED:
            # The ranks are in step (everyone agreed), so one more collective is safe: rank 0 collects every
            # rank's error for the client's 500 message.
            mine = f"rank {self.rank}: {type(error[0]).__name__}: {error[0]}" if error else None
            gathered = self.channel.gather(mine)
            if gathered is not None:
                outcome.errors = [e for e in gathered if e]
        elif status == FATAL:
            outcome.errors = [f"rank {self.rank}: {type(e).__name__}: {e}" for e in error] or [
                "a peer rank failed in a collective"
            ]
        return outcome


def default_threads() -> int:
    """Torch threads per rank: OMP_NUM_THREADS when set, else this node's cores shared by its ranks."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def call_defaults(model: str, pipe) -> dict[str, Any]:
    """Arguments every call gets unless the request sets them: the tiny models' small sizes and text length."""
    if model == "tiny-flux":
        return dict(height=128, width=128, max_sequence_length=32, num_inference_steps=4)
    if model == "tiny-wan":
        return dict(height=64, width=64, num_frames=5, max_sequence_length=32, num_inference_steps=4)
    sample = getattr(pipe, "default_sample_size", None)
    scale = getattr(pipe, "vae_scale_factor", None) or getattr(pipe, "vae_scale_factor_spatial", None)
    if sample and scale:
        return dict(height=sample * scale, width=sample * scale)
    return {}

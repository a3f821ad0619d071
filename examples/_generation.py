"""The part of generate.py and generate_video.py that is the same: load, parallelize, run, check, report.

Every rank runs the whole pipeline with the same seed; only the transformer's sequence is split, and its
output is whole again on every rank, so the scheduler, the VAE and the text encoders run as usual. With a
"dp" mesh dimension each data-parallel group runs its own prompt.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from _common import DTYPES, TOLERANCE, Parallel, StepTimer, add_parallel_args, gather_floats, print0, relative_error
from cp_hooks import enable_parallelism

DEFAULT_PROMPTS = ["a photo of a cat sitting on a red car", "a watercolor painting of a fox in a snowy forest"]


def generation_parser(description: str) -> argparse.ArgumentParser:
    """Options of both generation scripts (the scripts add their size options)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="a diffusers pipeline (hub name or local path); default: a tiny random one built offline")
    p.add_argument("--prompt", action="append", default=None,
                   help="repeat for several; data-parallel group i uses prompt i (mod their number)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--steps", type=int, default=4, help="denoising steps")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--true-cfg-scale", type=float, default=None,
                   help="Flux / QwenImage: classifier-free guidance with the negative prompt (two passes per step; "
                        "with --cfg-degree 2 they run at the same time)")
    p.add_argument("--max-sequence-length", type=int, default=None,
                   help="text tokens (default: 32 for the tiny pipelines, the pipeline's own otherwise)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="also run without context parallelism and print the max difference "
                        "(default: on for the tiny pipelines, off with --model)")
    p.add_argument("--output", default=None, help="file to save (group i of several dp groups adds _dp{i})")
    add_parallel_args(p)
    return p


def load_pipeline(args, build_tiny, device: torch.device):
    """The pipeline of `--model`, or the tiny random one, on `device` in `--dtype`, logging on rank 0 only."""
    dtype = DTYPES[args.dtype]
    if args.model:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype)
    else:
        pipe = build_tiny(seed=args.seed)
        if dtype != torch.float32:  # built in float32
            pipe.to(dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=dist.get_rank() != 0)
    return pipe


def run_pipeline(pipe, call_kwargs: dict, output_attr: str, seed: int, device) -> tuple:
    """One generation: returns (decoded output array, final latents, seconds per step). The generator
    lives on the CPU so that the initial noise is the same on every rank and every device."""
    timer = StepTimer(device)
    timer.start()
    out = pipe(**call_kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               callback_on_step_end=timer)
    return getattr(out, output_attr), timer.latents, timer.seconds_per_step


def generate_and_check(pipe, par: Parallel, args, call_kwargs: dict, output_attr: str, describe: str):
    """Run the pipeline with context parallelism (and, with --check, without first); print the report.

    Returns:
        (this group's output array, ok) where ok is False when a group's difference exceeds the tolerance.
    """
    prompts = args.prompt or DEFAULT_PROMPTS
    prompt = prompts[par.dp_rank % len(prompts)]
    call_kwargs = dict(call_kwargs, prompt=prompt, num_inference_steps=args.steps)
    if args.negative_prompt is not None:
        call_kwargs["negative_prompt"] = args.negative_prompt
    if args.guidance_scale is not None:
        call_kwargs["guidance_scale"] = args.guidance_scale
    if args.true_cfg_scale is not None:
        call_kwargs["true_cfg_scale"] = args.true_cfg_scale
        call_kwargs.setdefault("negative_prompt", "blurry, low quality")
    if args.max_sequence_length is not None:
        call_kwargs["max_sequence_length"] = args.max_sequence_length
    check = args.check if args.check is not None else not args.model

    config = par.config
    cfg = f"cfg {config.cfg_degree} x " if config.cfg_degree > 1 else ""
    print0(f"{describe}, {par.world} ranks on {par.device.type}: dp {par.dp_size} x {cfg}ring {config.ring_degree} x "
           f"ulysses {config.ulysses_degree}, rotate {config.rotate_method}, {args.dtype}, {args.steps} steps")
    if check:
        reference, reference_latents, single_s = run_pipeline(pipe, call_kwargs, output_attr, args.seed, par.device)
    # Every transformer of the pipeline (Wan 2.2 has two), and the VAE's decode split by rows unless turned off.
    enable_parallelism(pipe, config, vae=False if getattr(args, "no_vae_parallel", False) else None)
    output, latents, cp_s = run_pipeline(pipe, call_kwargs, output_attr, args.seed, par.device)

    # Both the latents (the transformer's direct result) and the decoded output are compared.
    latent_err = relative_error(latents, reference_latents) if check else 0.0
    output_err = relative_error(torch.from_numpy(output), torch.from_numpy(reference)) if check else 0.0
    # Every rank's errors and timings, so that rank 0 can report each data-parallel group.
    rows = gather_floats([max(latent_err, output_err), latent_err, output_err, single_s if check else 0.0, cp_s],
                         par.device)
    tol = TOLERANCE[DTYPES[args.dtype]]
    ok = True
    cp_size = config.total_ranks  # the ranks of one data-parallel group (cfg groups included)
    for group in range(par.dp_size):
        group_rows = rows[group * cp_size:(group + 1) * cp_size]
        group_err, group_latent, group_output = (max(r[i] for r in group_rows) for i in range(3))
        label = (f"dp group {group}, " if par.dp_size > 1 else "") + f"prompt {prompts[group % len(prompts)]!r}"
        if check:
            ok &= group_err <= tol
            print0(f"{label}: max |context parallel - single process| = {group_err:.3e} (latents {group_latent:.3e}, "
                   f"decoded {group_output:.3e}; relative to max(1, |single process|), tolerance {tol:g}): "
                   f"{'PASS' if group_err <= tol else 'FAIL'}")
    cp_step = max(r[4] for r in rows)
    if check:
        single_step = max(r[3] for r in rows)
        print0(f"seconds per step: single process {single_step:.4f}, context parallel {cp_step:.4f} "
               f"(speed-up {single_step / cp_step:.2f}x)")
    else:
        print0(f"seconds per step: context parallel {cp_step:.4f}")
    return output, ok


def output_path(args, default: str, par: Parallel) -> str:
    """`--output` (or `default`), with `_dp{i}` before the extension when there are several dp groups."""
    path = args.output or default
    if par.dp_size > 1:
        stem, dot, ext = path.rpartition(".")
        path = f"{stem}_dp{par.dp_rank}.{ext}" if dot else f"{path}_dp{par.dp_rank}"
    return path

"""Fine-tune a Flux transformer with context parallelism (flow matching on a synthetic dataset).

    accelerate launch --multi_gpu --num_processes 2 examples/train.py               # CPU: 2 gloo ranks
    torchrun --nproc_per_node 2 examples/train.py --ring 2 --rotate-method alltoall
    torchrun --nproc_per_node 4 examples/train.py --dp 2                            # 2 batches x 2 CP ranks
    accelerate launch --num_processes 8 examples/train.py --model black-forest-labs/FLUX.1-dev \\
        --dtype bfloat16 --ulysses 8 --height 128 --width 128 --text-len 512 --no-check

Each context-parallel group trains on one batch: every rank of the group gets the same samples, the
transformer splits their tokens, and the plan's gather makes the prediction whole on every rank, so every
rank computes the same loss. Back-propagation then leaves each rank with the gradient of its own tokens
only; `cp_hooks.reduce_gradients(model, config)` sums those partial gradients over the context-parallel
group, after which every rank holds the single-process gradient. With --dp, the gradients are then
averaged over the data-parallel group as in ordinary data parallelism.

accelerate is only the launcher: `accelerator.prepare(model)` would wrap the model in DDP, which averages
gradients over *all* ranks, context-parallel ones included, instead of summing them over the CP group.

With --check (default for the tiny model) every rank first runs the same loop in one process on a copy of
the model (the whole global batch, no context parallelism), and rank 0 prints the max weight difference.
AdamW divides each gradient element by its running magnitude (plus eps = 1e-8), so for elements whose
gradient is near zero an fp32 rounding difference of 1e-10 moves the update by a sizable fraction of the
learning rate: with AdamW in fp32 the weights agree to a few 1e-6 here, not to rounding. `--optimizer sgd`
(fp32) or `--dtype float64` (AdamW) make the comparison exact up to rounding; tests/test_training.py uses both.
Without --model the transformer is a tiny random Flux; the dataset is synthetic either way (random
latents and text embeddings).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from _common import DTYPES, TOLERANCE, add_parallel_args, max_over_ranks, print0, relative_error, setup_parallel
from cp_hooks import disable_parallelism, enable_parallelism, reduce_gradients, shutdown_distributed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a Flux checkpoint (its transformer/ subfolder is loaded)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=2, help="samples per data-parallel group and step")
    p.add_argument("--samples", type=int, default=16, help="size of the synthetic dataset")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                   help="AdamW, or SGD with momentum 0.9 (see --check about AdamW and rounding)")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 for AdamW, 0.1 for SGD")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the (reduced) gradient norm; 0: off")
    p.add_argument("--height", type=int, default=16, help="latent grid height (image tokens = height * width)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--text-len", type=int, default=16, help="text tokens")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="compare the weights with the same loop in one process (default: on for the tiny model)")
    p.add_argument("--output-dir", default=None, help="rank 0 saves the trained transformer here")
    add_parallel_args(p)
    return p.parse_args(argv)


def build_transformer(model: str | None = None, seed: int = 0, heads: int = 4):
    """The transformer of the Flux checkpoint `model`, or a tiny random one (2 + 2 blocks, 64 channels)."""
    from diffusers import FluxTransformer2DModel

    if model:
        return FluxTransformer2DModel.from_pretrained(model, subfolder="transformer")
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=heads, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )


class SyntheticDataset(torch.utils.data.Dataset):
    """Random packed latents, text embeddings, noise and a flow-matching time per sample.

    Sample i is drawn from its own generator (seed + i), so a sample is the same whichever rank or
    data-parallel group asks for it: the single-process reference sees exactly the same data.
    """

    def __init__(self, model, samples: int, height: int, width: int, text_len: int, seed: int = 0) -> None:
        cfg = model.config
        self.samples, self.seed = samples, seed
        self.image_shape = (height * width, cfg.in_channels)
        self.text_shape = (text_len, cfg.joint_attention_dim)
        self.pooled_dim = cfg.pooled_projection_dim

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return dict(latents=torch.randn(self.image_shape, generator=g),
                    text=torch.randn(self.text_shape, generator=g),
                    pooled=torch.randn(self.pooled_dim, generator=g),
                    noise=torch.randn(self.image_shape, generator=g),
                    t=torch.rand((), generator=g))


def flux_ids(height: int, width: int, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's position ids: (row, column) per image token, zeros for text tokens."""
    img = torch.zeros(height, width, 3)
    img[..., 1] = torch.arange(height)[:, None]
    img[..., 2] = torch.arange(width)[None, :]
    return img.reshape(-1, 3), torch.zeros(text_len, 3)


def flow_matching_loss(model, batch: dict, img_ids, txt_ids) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) x0 + t noise; the model predicts the velocity noise - x0."""
    t = batch["t"]
    x0, noise = batch["latents"], batch["noise"]
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    guidance = torch.full_like(t, 3.5) if model.config.guidance_embeds else None
    pred = model(hidden_states=x_t, timestep=t, guidance=guidance, encoder_hidden_states=batch["text"],
                 pooled_projections=batch["pooled"], img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
    # In at least float32 (a bf16 model's loss is taken in float32; an fp64 model's stays fp64).
    loss_dtype = torch.promote_types(pred.dtype, torch.float32)
    return F.mse_loss(pred.to(loss_dtype), (noise - x0).to(loss_dtype))


def average_gradients(model, group) -> None:
    """Average `.grad` over a data-parallel group (after `reduce_gradients` has summed the CP partials)."""
    size = dist.get_world_size(group)
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, group=group)
            param.grad.div_(size)


def make_optimizer(params, name: str, lr: float | None) -> torch.optim.Optimizer:
    """AdamW (weight decay 0.01) or SGD with momentum 0.9; `lr=None` picks 1e-3 / 0.1."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr or 1e-3, weight_decay=0.01)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr or 0.1, momentum=0.9)
    raise ValueError(f"Unknown optimizer {name!r}; choose 'adamw' or 'sgd'.")


def train(model, dataset, *, steps: int, batch_size: int, lr: float | None = None, optimizer: str = "adamw",
          max_grad_norm: float = 1.0, height: int, width: int, config=None, dp_rank: int = 0, dp_size: int = 1,
          dp_group=None, log=None) -> list[float]:
    """The training loop: `steps` optimizer steps; returns the loss of each step (this group's batch).

    Step s uses samples [s * B * dp_size, (s + 1) * B * dp_size) of `dataset` (mod its length), of which
    data-parallel group k takes the k-th block of B. So one process with `batch_size = B * dp_size` and no
    config sees exactly the global batch of a data-parallel run: the mean of the groups' mean-loss
    gradients is the gradient of the global mean loss.

    Args:
        config: the set-up `ContextParallelConfig` the model was parallelized with, or None (one process).
        dp_rank, dp_size, dp_group: this process's data-parallel group index, their number, and the
            process group over which gradients are averaged.
        log: called as log(step, loss, seconds) after every step.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    img_ids, txt_ids = (ids.to(device) for ids in flux_ids(height, width, dataset.text_shape[0]))
    opt = make_optimizer(model.parameters(), optimizer, lr)
    model.train()
    losses = []
    for step in range(steps):
        start = time.perf_counter()
        first = (step * dp_size + dp_rank) * batch_size
        samples = [dataset[(first + j) % len(dataset)] for j in range(batch_size)]
        batch = {k: torch.stack([s[k] for s in samples]).to(device, dtype) for k in samples[0]}
        loss = flow_matching_loss(model, batch, img_ids, txt_ids)
        loss.backward()
        if config is not None:
            reduce_gradients(model, config)  # partial (own tokens) -> full gradient, on every CP rank
        if dp_size > 1:
            average_gradients(model, dp_group)
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None:
            log(step, loss.item(), time.perf_counter() - start)
    model.eval()
    return losses


def weight_error(model, reference) -> float:
    """max over parameters of max |w - w_ref| / max(1, max |w_ref|)."""
    ref = dict(reference.named_parameters())
    return max(relative_error(p.detach(), ref[n].detach()) for n, p in model.named_parameters())


def main() -> int:
    args = parse_args()
    par = setup_parallel(args)
    dtype = DTYPES[args.dtype]
    model = build_transformer(args.model, args.seed).to(par.device)
    if dtype != torch.float32:  # built / loaded in float32
        model.to(dtype)
    dataset = SyntheticDataset(model, args.samples, args.height, args.width, args.text_len, seed=args.seed)
    check = args.check if args.check is not None else not args.model
    loop = dict(steps=args.steps, lr=args.lr, optimizer=args.optimizer, max_grad_norm=args.max_grad_norm,
                height=args.height, width=args.width)

    config = par.config
    tokens = args.height * args.width + args.text_len
    print0(f"training {type(model).__name__} ({args.model or 'tiny random'}), {tokens} tokens, batch "
           f"{args.batch_size} x {par.dp_size} dp groups, {args.optimizer}, {args.dtype}, {par.world} ranks on "
           f"{par.device.type}: dp {par.dp_size} x ring {config.ring_degree} x ulysses {config.ulysses_degree}, "
           f"rotate {config.rotate_method}")
    if check:  # the same loop in one process, on the whole global batch
        reference = copy.deepcopy(model)
        ref_losses = train(reference, dataset, batch_size=args.batch_size * par.dp_size, **loop)

    enable_parallelism(model, config)
    times = []

    def log(step, loss, seconds):
        times.append(seconds)
        print0(f"step {step}: loss {loss:.6f} ({seconds:.3f} s)")

    train(model, dataset, batch_size=args.batch_size, config=config, dp_rank=par.dp_rank, dp_size=par.dp_size,
          dp_group=par.dp_group, log=log, **loop)
    print0(f"seconds per step: {sorted(times)[len(times) // 2]:.4f} (median)")
    disable_parallelism(model)

    ok = True
    if check:
        err = max_over_ranks(weight_error(model, reference), par.device)
        tol = TOLERANCE[dtype]
        ok = err <= tol
        print0(f"single-process losses: {', '.join(f'{x:.6f}' for x in ref_losses)}")
        print0(f"max |weights context parallel - single process| after {args.steps} steps = {err:.3e} "
               f"(relative to max(1, |weight|), tolerance {tol:g}): {'PASS' if ok else 'FAIL'}")
    if args.output_dir and par.is_main:
        model.save_pretrained(args.output_dir)
        print(f"rank 0: saved {args.output_dir}", flush=True)
    shutdown_distributed()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

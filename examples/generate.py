"""Text to image with a diffusers pipeline whose transformer runs with context parallelism.

    accelerate launch --multi_gpu --num_processes 2 examples/generate.py            # CPU: 2 gloo ranks, tiny Flux
    torchrun --nproc_per_node 2 examples/generate.py --ring 2 --rotate-method alltoall
    torchrun --nproc_per_node 4 examples/generate.py --dp 2                         # 2 prompts x 2 CP ranks each
    torchrun --nproc_per_node 4 examples/generate.py --cfg-degree 2 --true-cfg-scale 4   # CFG passes at once
    accelerate launch --num_processes 4 examples/generate.py --model black-forest-labs/FLUX.1-dev \\
        --dtype bfloat16 --height 1024 --width 1024 --steps 28 --ulysses 4 --prompt "a cat" --check

Without --model the pipeline is a tiny random Flux (transformer, VAE, CLIP and T5 encoders built from
configs, tokenizers built in code), so the script runs anywhere, offline. Every rank uses the same seed;
rank 0 of each data-parallel group saves its image. With --check (default for the tiny pipeline) every
rank first runs the pipeline without context parallelism, and rank 0 prints the max difference. Exits
with status 1 if a difference exceeds the tolerance.
"""

from __future__ import annotations

import _tiny
from _common import finish, setup_parallel
from _generation import generate_and_check, generation_parser, load_pipeline, output_path


def main() -> int:
    p = generation_parser(__doc__)
    p.add_argument("--height", type=int, default=None, help="pixels (default: 128 tiny, the pipeline's otherwise)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--heads", type=int, default=4, help="attention heads of the tiny transformer")
    p.add_argument("--no-vae-parallel", action="store_true",
                   help="decode with the whole VAE on every rank (default: each rank decodes its rows, docs/vae.md)")
    args = p.parse_args()
    par = setup_parallel(args)
    pipe = load_pipeline(args, lambda seed: _tiny.tiny_flux_pipeline(seed=seed, heads=args.heads), par.device)

    call = {}
    if not args.model:  # small enough for CPUs: 128x128 pixels = 32x32 latents = 1024 image tokens
        call = dict(height=128, width=128, max_sequence_length=32)
    call.update({k: v for k, v in dict(height=args.height, width=args.width).items() if v is not None})
    describe = f"{type(pipe).__name__} ({args.model or 'tiny random'})"
    images, ok = generate_and_check(pipe, par, args, call, "images", describe)

    if par.is_group_main:
        path = output_path(args, "image.png", par)
        pipe.image_processor.numpy_to_pil(images)[0].save(path)
        print(f"rank {par.rank}: saved {path}", flush=True)
    return finish(ok)


if __name__ == "__main__":
    raise SystemExit(main())

"""Text to video with a Wan pipeline whose transformer runs with context parallelism.

    accelerate launch --multi_gpu --num_processes 2 examples/generate_video.py      # CPU: 2 gloo ranks, tiny Wan
    torchrun --nproc_per_node 2 examples/generate_video.py --ring 2 --output video.webp
    torchrun --nproc_per_node 4 examples/generate_video.py --cfg-degree 2           # cond / uncond at once
    accelerate launch --num_processes 8 examples/generate_video.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
        --dtype bfloat16 --height 480 --width 832 --frames 81 --steps 50 --ulysses 4 --ring 2 --output video.mp4

Without --model the pipeline is a tiny random Wan (transformer, VAE and T5 encoder built from configs,
tokenizer built in code), so the script runs anywhere, offline. The video's self-attention is split over
the ranks; the text cross-attention stays local (its keys are the replicated text). Both transformers of
a Wan 2.2 pipeline are parallelized. Rank 0 of each data-parallel group saves the frames: .gif / .webp
with Pillow, .mp4 with diffusers' export_to_video (needs imageio or opencv). With --check (default for
the tiny pipeline) rank 0 prints the max difference against a run without context parallelism.
"""

from __future__ import annotations

import numpy as np

import _tiny
from _common import finish, setup_parallel
from _generation import generate_and_check, generation_parser, load_pipeline, output_path


def save_frames(frames: np.ndarray, path: str, fps: int) -> None:
    """Save `frames` (F, H, W, 3) floats in [0, 1] as an animated image (Pillow) or a video file."""
    from PIL import Image

    if path.lower().endswith((".gif", ".webp", ".png")):
        images = [Image.fromarray((f * 255).round().clip(0, 255).astype(np.uint8)) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        from diffusers.utils import export_to_video

        export_to_video(list(frames), path, fps=fps)


def main() -> int:
    p = generation_parser(__doc__)
    p.add_argument("--height", type=int, default=None, help="pixels (default: 64 tiny, the pipeline's otherwise)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="4k+1 frames (default: 9 tiny, the pipeline's otherwise)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--heads", type=int, default=4, help="attention heads of the tiny transformer")
    p.add_argument("--no-vae-parallel", action="store_true",
                   help="decode with the whole VAE on every rank (default: each rank decodes its rows, docs/vae.md)")
    args = p.parse_args()
    par = setup_parallel(args)
    pipe = load_pipeline(args, lambda seed: _tiny.tiny_wan_pipeline(seed=seed, heads=args.heads), par.device)

    call = {}
    if not args.model:  # 9 frames of 64x64: 3 latent frames of 8x8, patched 2x2 -> 48 video tokens
        call = dict(height=64, width=64, num_frames=9, max_sequence_length=32)
    call.update({k: v for k, v in dict(height=args.height, width=args.width, num_frames=args.frames).items()
                 if v is not None})
    describe = f"{type(pipe).__name__} ({args.model or 'tiny random'})"
    videos, ok = generate_and_check(pipe, par, args, call, "frames", describe)

    if par.is_group_main:
        path = output_path(args, "video.gif", par)
        save_frames(videos[0], path, args.fps)
        print(f"rank {par.rank}: saved {path} ({len(videos[0])} frames)", flush=True)
    return finish(ok)


if __name__ == "__main__":
    raise SystemExit(main())

"""Time each CUDA local-attention kernel (forward + the block backward) on one GPU: which to prefer.

    python benchmarks/cuda_kernel_timing.py
"""

import torch

import cp_hooks.attention.local as local
from cp_hooks.attention.local import attention_with_lse, attention_with_lse_backward


def timed(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main():
    for seq in (8192, 32768):
        q, k, v, g = (torch.randn(1, seq, 24, 128, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        sdpa = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                              v.transpose(1, 2)))
        print(f"seq {seq}: torch SDPA forward {sdpa:.2f} ms")
        for kernel in ("cudnn", "flash"):
            local.CUDA_KERNELS = local.CUDA_BACKWARD_KERNELS = (kernel,)
            out, lse = attention_with_lse(q, k, v)
            fwd = timed(lambda: attention_with_lse(q, k, v))
            bwd = timed(lambda: attention_with_lse_backward(g, q, k, v, out, lse))
            print(f"seq {seq}: {kernel:9s} forward {fwd:.2f} ms, backward {bwd:.2f} ms")


if __name__ == "__main__":
    main()

"""One rank of a fault-injection run (started by tests/test_faults.py, not collected by pytest).

Usage: python fault_worker.py MODE RING ULYSSES ROTATE — env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set.
Rank 1 misbehaves in the middle of the forward (inside the second block): MODE "die" exits the process,
"hang" sleeps while staying alive, "raise" raises and exits. The other ranks must exit non-zero.
"""

import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))

import tiny_models  # noqa: E402
from cp_hooks import ContextParallelConfig, enable_parallelism  # noqa: E402

PG_TIMEOUT_S = 5


def main() -> None:
    mode, ring, ulysses, rotate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    model, inputs = tiny_models.tiny_flux(heads=6, height=6, width=6, text_len=6)
    enable_parallelism(model, ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses, rotate_method=rotate))
    model(**inputs)  # one healthy forward first

    def misbehave(module, args):
        if dist.get_rank() == 1:
            if mode == "die":
                os._exit(7)
            if mode == "hang":
                time.sleep(3600)
            raise RuntimeError("injected failure")

    model.single_transformer_blocks[0].register_forward_pre_hook(misbehave)
    model(**inputs)
    print("finished without error", flush=True)


if __name__ == "__main__":
    main()

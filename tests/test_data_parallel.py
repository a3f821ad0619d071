"""Data parallel x context parallel on 4 CPU ranks: 2 groups of 2, each doing its own work.

* generation: examples/generate.py --dp 2 --ring 2 gives each group its own prompt; each group's image must equal
  its own single-process result (fp32, 1e-5 relative), and the two images must differ;
* training: a user mesh with an extra outer dimension (named "fsdp" here, any name works) beside "ring"
  and "ulysses"; each group trains on its own batch, `reduce_gradients` sums the partial gradients inside
  a group, then the gradients are averaged over the groups. The weights must equal one process trained
  on the whole global batch (SGD, fp32, 1e-5; see test_training.py for why AdamW is checked in fp64).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch.distributed as dist
from PIL import Image

from cp_hooks import ContextParallelConfig, disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL
from test_examples import launch, parity
from test_training import same_on_every_rank, train_example

_MESHES: dict = {}


def _mesh(shape: tuple[int, int, int]):
    """A cached ("fsdp", "ring", "ulysses") mesh: process groups are created once per shape."""
    from torch.distributed.device_mesh import init_device_mesh

    if shape not in _MESHES:
        _MESHES[shape] = init_device_mesh("cpu", shape, mesh_dim_names=("fsdp", "ring", "ulysses"))
    return _MESHES[shape]


def dp_cp_training(shape: tuple[int, int, int], rotate: str) -> list[float]:
    mesh = _mesh(shape)
    config = ContextParallelConfig(mesh=mesh, rotate_method=rotate)
    loop = dict(steps=3, optimizer="sgd", max_grad_norm=1.0, height=8, width=6)
    dp_size = shape[0]
    model = train_example.build_transformer(seed=0)
    dataset = train_example.SyntheticDataset(model, samples=16, height=8, width=6, text_len=6)
    reference = copy.deepcopy(model)
    train_example.train(reference, dataset, batch_size=2 * dp_size, **loop)  # one process, the global batch

    enable_parallelism(model, config)
    losses = train_example.train(model, dataset, batch_size=2, config=config, dp_rank=mesh["fsdp"].get_local_rank(),
                                 dp_size=dp_size, dp_group=mesh["fsdp"].get_group(), **loop)
    disable_parallelism(model)
    err = train_example.weight_error(model, reference)
    assert err <= FP32_TOL, f"rank {dist.get_rank()}: weights differ from one process by {err:.2e} > {FP32_TOL}"
    assert same_on_every_rank(model), "ranks ended with different weights"
    return losses


@pytest.mark.parametrize("shape,rotate", [((2, 1, 2), "allgather"), ((2, 2, 1), "alltoall")])
def test_dp_cp_training_matches_one_process(pool, shape, rotate):
    losses = pool(4).run(dp_cp_training, shape, rotate)
    assert losses[0] == losses[1] and losses[2] == losses[3]  # the same loss inside a context-parallel group
    assert losses[0] != losses[2]  # each data-parallel group trained on its own batch


def test_generate_two_prompts_on_dp2_x_cp2(tmp_path):
    # Ring inside the groups (the other tests of the scripts run their Ulysses default).
    output = launch("generate.py", 4, "--dp", "2", "--ring", "2", "--rotate-method", "alltoall", "--output",
                    "image.png", cwd=tmp_path)
    assert len(parity(output)) == 2  # one line per data-parallel group, each against its own single process
    assert "dp 2 x ring 2 x ulysses 1, rotate alltoall" in output
    images = [np.asarray(Image.open(tmp_path / f"image_dp{group}.png")) for group in (0, 1)]
    assert not np.array_equal(*images), "the two data-parallel groups should have generated different prompts"

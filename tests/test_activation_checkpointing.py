"""Activation checkpointing under context parallelism: recomputed attention is routed as in the forward.

A checkpointed block recomputes its forward during the backward, after the model's forward has returned.
Attention that reaches SDPA directly (a plain module, or a diffusers processor that calls SDPA itself)
must still attend over every rank's keys there: before, non-reentrant checkpoints failed their
recomputation check and reentrant ones gave wrong gradients. Checked: torch.utils.checkpoint (both kinds)
around a plain SDPA block, and diffusers' `enable_gradient_checkpointing()` on catalogue models whose
processors call SDPA directly, under Ulysses and ring; gradients against one process (fp32, relative 1e-5).
"""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint

from cp_hooks import (
    ContextParallelInput,
    ContextParallelOutput,
    disable_parallelism,
    enable_parallelism,
    reduce_gradients,
)
from cp_testing import FP32_TOL, make_config, rel_err

MODES = [(1, 2, "allgather"), (2, 1, "alltoall")]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 4).permute(2, 0, 3, 1, 4)
        return x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, 16)


class Model(nn.Module):
    def __init__(self, reentrant: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.proj_out = nn.Linear(16, 16)
        self.reentrant = reentrant

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint.checkpoint(block, x, use_reentrant=self.reentrant)
        return self.proj_out(x)


PLAN = {"": {"x": ContextParallelInput(split_dim=1, expected_dims=3)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}


def _gradients(model, run):
    model.zero_grad()
    run(model).square().sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def plain_checkpointing(ring, ulysses, rotate):
    worst = 0.0
    for reentrant in (False, True):
        torch.manual_seed(0)
        model = Model(reentrant)
        x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
        ref = _gradients(model, lambda m: m(x))
        config = make_config(ring, ulysses, rotate_method=rotate)
        enable_parallelism(model, config, plan=PLAN)
        model.zero_grad()
        model(x).square().sum().backward()
        reduce_gradients(model, config)
        disable_parallelism(model)
        worst = max(worst, *(rel_err(p.grad, ref[n]) for n, p in model.named_parameters()))
    return worst


@pytest.mark.parametrize("ring,ulysses,rotate", MODES)
def test_torch_checkpoint_matches_one_process(pool, ring, ulysses, rotate):
    assert max(pool(2).run(plain_checkpointing, ring, ulysses, rotate)) <= FP32_TOL


def diffusers_checkpointing(class_name, ring, ulysses, rotate):
    from cp_hooks.verify.catalogue import get_entry

    entry = get_entry(class_name)
    model, inputs = entry.build()
    model.train()
    model.enable_gradient_checkpointing()
    reference = copy.deepcopy(model)

    def run(m):
        out = m(**inputs)
        return out[0] if isinstance(out, (tuple, list)) else out.sample

    ref = _gradients(reference, run)
    config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=entry.anything and ulysses > 1,
                         ring_anything=entry.anything and ring > 1)
    enable_parallelism(model, config)
    model.zero_grad()
    run(model).square().sum().backward()
    reduce_gradients(model, config)
    disable_parallelism(model)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(ref), "other parameters got gradients"
    return max(rel_err(p.grad, ref[n]) for n, p in model.named_parameters() if p.grad is not None)


@pytest.mark.parametrize("class_name", ["PixArtTransformer2DModel", "HiDreamImageTransformer2DModel"])
@pytest.mark.parametrize("ring,ulysses,rotate", MODES)
def test_diffusers_gradient_checkpointing_matches_one_process(pool, class_name, ring, ulysses, rotate):
    assert max(pool(2).run(diffusers_checkpointing, class_name, ring, ulysses, rotate)) <= FP32_TOL

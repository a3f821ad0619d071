"""Whole pipelines and diffusers' own config objects: `enable_parallelism(pipe, config)` against one process.

A tiny Wan 2.2-style pipeline (two transformers, switched at a boundary timestep) runs 3 denoising steps
alone and then with context parallelism on every transformer; the latents (the transformers' direct
result) and the decoded video must agree: fp32, max |difference| / max(1, max |reference|) <= 1e-5.
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

from cp_hooks import disable_parallelism, enable_parallelism, is_parallelized
from cp_testing import FP32_TOL, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))


def _wan22_pipeline():
    from diffusers import WanPipeline

    import _tiny

    pipe = _tiny.tiny_wan_pipeline(seed=0)
    second = copy.deepcopy(pipe.transformer)
    with torch.no_grad():
        for p in second.parameters():
            p.mul_(0.9)  # another expert, so that a wrong switch would show
    return WanPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                       transformer=pipe.transformer, transformer_2=second, scheduler=pipe.scheduler,
                       boundary_ratio=0.5)


def _generate(pipe):
    out = pipe("a red cube", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=3,
               guidance_scale=2.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
               output_type="latent")
    return out.frames


def pipeline_parity(config_kind: str) -> float:
    from diffusers.models._modeling_parallel import ContextParallelConfig as DiffusersConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    from cp_hooks import ContextParallelConfig

    pipe = _wan22_pipeline()
    reference = _generate(pipe)
    config = {"cp_hooks": ContextParallelConfig(ulysses_degree=2),
              "diffusers": DiffusersConfig(ulysses_degree=2),
              "parallel_config": ParallelConfig(context_parallel_config=DiffusersConfig(ring_degree=2))
              }[config_kind]
    enable_parallelism(pipe, config)
    assert is_parallelized(pipe) and is_parallelized(pipe.transformer) and is_parallelized(pipe.transformer_2)
    assert not is_parallelized(pipe.text_encoder) and not is_parallelized(pipe.vae)  # left alone
    with pytest.raises(RuntimeError, match="already enabled"):
        enable_parallelism(pipe, config)
    parallel = _generate(pipe)
    disable_parallelism(pipe)
    assert not any(is_parallelized(m) for m in (pipe, pipe.transformer, pipe.transformer_2))
    err = rel_err(parallel, reference)
    assert err <= FP32_TOL, f"{config_kind}: latents differ by {err:.2e}"
    assert torch.equal(_generate(pipe), reference)  # restored exactly
    return err


@pytest.mark.parametrize("config_kind", ["cp_hooks", "diffusers", "parallel_config"])
def test_pipeline_with_two_transformers(pool, config_kind):
    pool(2).run(pipeline_parity, config_kind, timeout=300)


def refuse_double_parallelism() -> str:
    """A model with diffusers' own context parallelism is refused before anything is installed."""
    from diffusers.models._modeling_parallel import ContextParallelConfig as DiffusersConfig

    import tiny_models

    model, _ = tiny_models.tiny_flux()
    model._parallel_config = DiffusersConfig(ulysses_degree=2)  # what diffusers' enable_parallelism records
    with pytest.raises(RuntimeError, match="diffusers' own parallelism is enabled"):
        enable_parallelism(model, DiffusersConfig(ulysses_degree=2))
    assert not is_parallelized(model)
    with pytest.raises(TypeError, match="ContextParallelConfig"):
        enable_parallelism(tiny_models.tiny_flux()[0], {"ulysses_degree": 2})
    return "refused"


def test_refuses_a_model_with_diffusers_parallelism(pool):
    assert pool(2).run(refuse_double_parallelism) == ["refused", "refused"]

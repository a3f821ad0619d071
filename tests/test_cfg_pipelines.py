"""Sequential guidance over two cfg groups, whole pipelines against one process (cp_hooks.cfg_sequential).

Wan, CogView4, LongCat-Image, SkyReels-V2 and Ovis-Image (guidance_scale > 1), Flux, QwenImage and HunyuanVideo
(true_cfg_scale > 1 with a negative prompt) call the transformer twice per step, in cache_context("cond") and
("uncond"). With cfg_degree=2 the first step learns which arguments differ, and every later step computes the two
calls at once on the two groups. The latents must equal one process's (fp32: FP32_TOL relative), and the transformer
must really have run fewer forwards per rank. QwenImage's two calls differ in their text's length (the prompt's 8
tokens, the negative prompt's 6), and each call builds a new `timestep / 1000` tensor, equal in value: the
prediction compares values. In a predicted pair the two groups compute calls of different shapes, so the strict
input check compares the ranks of one cfg group only (cp_hooks.consistency); the learning step still compares every
rank. CogView4 pads both texts on the left to 16 tokens; HunyuanVideo's differ in their padding mask and CLIP's
pooled vector as well.
LongCat-Image's "cond" call passes `guidance=None` and its "uncond" call no `guidance` at all: an argument left
out is its default, so the two are paired all the same.
Ovis-Image pads both messages to the same length and gives each call its own `txt_ids` tensor, equal in value.
HunyuanVideo 1.5 is not here: its pipeline runs the two calls through a guider, in cache_context("pred_cond")
and ("pred_uncond") (the guider's identifiers), labels that cp_hooks.cfg_sequential does not pair.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from cp_hooks import disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL, make_config, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

STEPS = 4


def _count_forwards(module) -> list:
    calls = []
    module.register_forward_pre_hook(lambda m, args: calls.append(1))
    return calls


def _wan(pipe):
    return pipe("a red cube", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=STEPS,
                guidance_scale=2.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def _skyreels_v2(pipe):  # Wan's transformer, UniPC scheduler (see _tiny.tiny_skyreels_v2_pipeline)
    return pipe("a red cube", negative_prompt="blur", height=32, width=32, num_frames=5, num_inference_steps=STEPS,
                guidance_scale=2.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def _ovis_image(pipe):  # the word-level tokenizer's crop of the message (see _tiny.qwen3_tokenizer)
    return pipe("a red cube", negative_prompt="blur", guidance_scale=2.0, height=32, width=32,
                num_inference_steps=STEPS, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").images


def _flux(pipe):
    return pipe("a red cube", negative_prompt="blur", true_cfg_scale=2.0, height=32, width=32,
                num_inference_steps=STEPS, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").images


def _qwenimage(pipe):
    return pipe("a red cube", negative_prompt="blur", true_cfg_scale=2.0, height=32, width=32,
                num_inference_steps=STEPS, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").images


def _cogview4(pipe):
    return pipe("a red cube", negative_prompt="blur", guidance_scale=2.0, height=32, width=32,
                num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="latent").images


def _hunyuan_video(pipe):  # the word-level tokenizer's crop of the template (see _tiny.llama_tokenizer)
    import _tiny

    return pipe("a red cube", negative_prompt="blur", true_cfg_scale=2.0, height=32, width=32, num_frames=5,
                num_inference_steps=STEPS, max_sequence_length=16,
                prompt_template=_tiny.hunyuan_video_prompt_template(), generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def _longcat_image(pipe):  # no prompt rewrite: see _tiny.tiny_longcat_image_pipeline
    return pipe("a red cube", negative_prompt="blur", guidance_scale=2.0, height=32, width=32,
                num_inference_steps=STEPS, enable_prompt_rewrite=False, generator=torch.Generator().manual_seed(0),
                output_type="latent").images


def sequential_parity(kind: str, ring: int, ulysses: int) -> tuple[float, int, int]:
    """(relative difference, forwards alone, forwards per rank with cfg) for one tiny pipeline."""
    import _tiny

    build, generate = {"wan": (_tiny.tiny_wan_pipeline, _wan), "flux": (_tiny.tiny_flux_pipeline, _flux),
                       "qwenimage": (_tiny.tiny_qwenimage_pipeline, _qwenimage),
                       "cogview4": (_tiny.tiny_cogview4_pipeline, _cogview4),
                       "hunyuan_video": (_tiny.tiny_hunyuan_video_pipeline, _hunyuan_video),
                       "longcat_image": (_tiny.tiny_longcat_image_pipeline, _longcat_image),
                       "skyreels_v2": (_tiny.tiny_skyreels_v2_pipeline, _skyreels_v2),
                       "ovis_image": (_tiny.tiny_ovis_image_pipeline, _ovis_image)}[kind]
    pipe = build(seed=0)
    pipe.set_progress_bar_config(disable=True)
    calls = _count_forwards(pipe.transformer)
    with torch.no_grad():
        reference = generate(pipe)
    alone = len(calls)
    calls.clear()
    original_class = type(pipe.transformer)
    enable_parallelism(pipe, make_config(ring, ulysses, cfg=2))
    try:
        with torch.no_grad():
            parallel = generate(pipe)
    finally:
        disable_parallelism(pipe)
    assert type(pipe.transformer) is original_class  # the paired-call subclass is undone
    assert "cache_context" not in pipe.transformer.__dict__
    return rel_err(parallel, reference), alone, len(calls)


def _run_parity(pool, world: int, kind: str, ring: int, ulysses: int) -> list:
    return pool(world).run(sequential_parity, kind, ring, ulysses, timeout=600)


@pytest.mark.parametrize("kind", ["wan", "flux", "qwenimage", "cogview4", "hunyuan_video", "longcat_image",
                                  "skyreels_v2", "ovis_image"])
def test_sequential_guidance_two_ranks(pool, kind):
    rel, alone, parallel = _run_parity(pool, 2, kind, 1, 1)[0]
    assert rel <= FP32_TOL, rel
    assert alone == 2 * STEPS and parallel == STEPS + 1, (alone, parallel)  # learns on step 1, then one each


@pytest.mark.parametrize("kind,ring,ulysses", [("wan", 1, 2), ("qwenimage", 1, 2), ("qwenimage", 2, 1)])
def test_sequential_guidance_with_ulysses(pool, kind, ring, ulysses):
    """cfg 2 x (ulysses 2 or ring 2) on 4 ranks: context parallelism inside each guidance group."""
    results = _run_parity(pool, 4, kind, ring, ulysses)
    assert all(rel <= FP32_TOL for rel, _, _ in results), results
    assert all(alone == 2 * STEPS and parallel == STEPS + 1 for _, alone, parallel in results), results


def mispredicted_call() -> list[float]:
    """A second step whose unconditional call changes more than the first step's did: computed, not reused."""
    from cp_hooks.verify.catalogue import get_entry

    model, inputs = get_entry("FluxTransformer2DModel").build()
    negative = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"] * -1)
    other = dict(negative, pooled_projections=inputs["pooled_projections"] + 1)  # not seen in step 1

    def step(model, cond, uncond):
        with torch.no_grad():
            with model.cache_context("cond"):
                a = model(**cond)[0]
            with model.cache_context("uncond"):
                b = model(**uncond)[0]
        return a, b

    expected = [step(model, inputs, negative), step(model, inputs, other)]
    enable_parallelism(model, make_config(1, 1, cfg=2))
    try:
        got = [step(model, inputs, negative)]
        with pytest.warns(RuntimeWarning, match="did not match"):
            got.append(step(model, inputs, other))
        got.append(step(model, inputs, negative))  # learns again, then predicts
    finally:
        disable_parallelism(model)
    expected.append(expected[0])
    return [rel_err(g, e) for gs, es in zip(got, expected) for g, e in zip(gs, es)]


def test_a_misprediction_is_computed_again(pool):
    for rels in pool(2).run(mispredicted_call):
        assert max(rels) <= FP32_TOL, rels

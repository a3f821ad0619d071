"""FasterCache with batched classifier-free guidance (`is_guidance_distilled=False`), under context parallelism.

CogVideoX's pipeline runs guidance as one transformer call per step, the unconditional and conditional inputs
stacked in the batch. With `is_guidance_distilled=False`, FasterCache's denoiser hook (on the model's forward)
drops the unconditional half of every batched keyword argument on the steps `unconditional_batch_skip_range`
and `unconditional_batch_timestep_skip_range` select, runs the conditional half only, and rebuilds the
unconditional output from the conditional one plus the low/high-frequency deltas (an FFT over each frame of the
model's whole output) it stored on the last full step. On those steps its attention hooks may also replace an
attention call by an extrapolation from the cached conditional outputs of the last two calls (when the batch is
the half batch and the step is in `spatial_attention_timestep_skip_range`).

Under cp_hooks the batch dimension is never split (Ulysses and ring split the sequence), the model's output is
gathered whole before the denoiser hook sees it (so its FFT and deltas are those of one process), and the
attention caches hold each rank's own shard. A tiny CogVideoX pipeline runs with the cache alone in one process
and then with Ulysses 2, ring 2 (all-gather) and ring 2 (all-to-all), the cache enabled before or after
cp_hooks (`cp_testing.ORDERS`); checked:
- the single-process run really skips: the transformer's blocks see a batch of 1 instead of 2 on some steps, and
  some attention calls are not computed (fewer `to_q` projections than without the cache);
- every parallel run takes the same path (the same batch per step, the same attention calls computed);
- its latents equal the single-process ones (fp32: FP32_TOL relative) and are identical on every rank. (The
  cache moves the latents by about 2e-3 relative from an uncached run, some 200 times the tolerance, so a
  parallel run that approximated differently would fail.)

With `cfg_degree=2` the model's forward receives only its cfg group's part of the batch (cp_hooks splits it in a
torch pre-hook, before FasterCache's replaced forward), so FasterCache would take halves of that part for the
two branches (an IndexError with one prompt, a wrong result with two); an enabled model refuses it with a
ValueError on every rank, in either order of enabling (cp_hooks/integration/caches.py).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist

from cp_hooks import disable_parallelism
from cp_hooks.forward import context
from cp_testing import FP32_TOL, ORDERS, apply_around_enable, make_config, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

# CogVideoXDDIMScheduler's 6 steps are timesteps 830, 664, 498, 332, 166, 0.
STEPS = 6
# (ring, ulysses, extra config) on 2 ranks.
MODES = ((1, 2, {}), (2, 1, {}), (2, 1, {"rotate_method": "alltoall"}))


def _faster_cache(pipe):
    from diffusers.hooks import FasterCacheConfig

    # A fresh config each time: apply_faster_cache fills in the callbacks of the config it is given.
    # unconditional_batch_skip_range=2 over every timestep: the unconditional half is skipped on iterations 1, 3
    # and 5 (timesteps 664, 332, 0) and computed on 0, 2, 4, which store the frequency deltas. Attention is
    # extrapolated only below timestep 500: on iteration 1 the half batch still runs attention (and its
    # conditional output is cached), on 3 and 5 it is replaced. The low-frequency weight (1.1 within (99, 901))
    # and the high-frequency one (1.1 within (-1, 301)) both apply on some skipped step.
    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 500),
        unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 1001),
        attention_weight_callback=lambda _: 0.5, current_timestep_callback=lambda: pipe.current_timestep,
        tensor_format="BFCHW", is_guidance_distilled=False,
    )


class _Path:
    """What the transformer computes per step: the batch its first block sees, and the attention calls run.

    Torch forward hooks on submodules: they run whatever forward diffusers or cp_hooks put in place. `to_q` runs
    only when an attention call is computed (FasterCache's attention hook returns its extrapolation without
    calling the processor)."""

    def __init__(self, pipe) -> None:
        transformer = pipe.transformer
        self.batches: list[int] = []
        self.attention_calls = 0
        self._handles = [transformer.transformer_blocks[0].register_forward_pre_hook(self._block, with_kwargs=True)]
        self._handles += [block.attn1.to_q.register_forward_hook(self._to_q)
                          for block in transformer.transformer_blocks]

    def _block(self, module, args, kwargs):
        self.batches.append(kwargs["hidden_states"].shape[0])

    def _to_q(self, module, args, output):
        self.attention_calls += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _generate(pipe):
    # guidance_scale > 1: the pipeline stacks [unconditional, conditional] in one batch.
    return pipe("a red cube", negative_prompt="blur", height=64, width=64, num_frames=9, num_inference_steps=STEPS,
                guidance_scale=6.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                output_type="latent").frames


def _run(pipe) -> tuple[torch.Tensor, list[int], int]:
    path = _Path(pipe)
    try:
        with torch.no_grad():
            latents = _generate(pipe)
    finally:
        path.remove()
    return latents, path.batches, path.attention_calls


def faster_cache_batched_parity() -> dict:
    """Every mode and order against the single-process run of the same cache, on this rank."""
    import _tiny

    # 48 video (3 frames of 4 x 4) and 16 text tokens, 4 heads of 8, 2 layers
    pipe = _tiny.tiny_cogvideox_pipeline(seed=0)
    _, plain_batches, plain_attention = _run(pipe)
    pipe.transformer.enable_cache(_faster_cache(pipe))
    try:
        reference, batches, attention = _run(pipe)
    finally:
        pipe.transformer.disable_cache()
    result = dict(plain=(plain_batches, plain_attention), reference=(batches, attention), runs={})
    for ring, ulysses, extra in MODES:
        for order in ORDERS:
            config = make_config(ring, ulysses, **extra)
            # A fresh cache (fresh hook states) for every run.
            apply_around_enable(pipe, config, lambda p: p.transformer.enable_cache(_faster_cache(p)), order)
            try:
                latents, batches, attention = _run(pipe)
            finally:
                disable_parallelism(pipe)
                pipe.transformer.disable_cache()
            key = (ring, ulysses, extra.get("rotate_method", "allgather"), order)
            result["runs"][key] = dict(rel=rel_err(latents, reference), batches=batches, attention=attention,
                                       latents=latents, rank=dist.get_rank())
    return result


def test_faster_cache_batched_guidance_matches_one_process(pool):
    pytest.importorskip("diffusers")
    per_rank = pool(2).run(faster_cache_batched_parity, timeout=300)
    plain_batches, plain_attention = per_rank[0]["plain"]
    batches, attention = per_rank[0]["reference"]
    assert plain_batches == [2] * STEPS, plain_batches
    # The cached path must really be taken: the unconditional half skipped on iterations 1, 3, 5, and attention
    # extrapolated on 3 and 5 (2 layers), else the comparison below would not cover it.
    assert batches == [2, 1, 2, 1, 2, 1], f"FasterCache did not skip the unconditional batch as set: {batches}"
    assert attention == plain_attention - 2 * 2, (attention, plain_attention)
    for key, run in per_rank[0]["runs"].items():
        # The same decisions as one process (they come from the step and timestep only)...
        assert run["batches"] == batches and run["attention"] == attention, (key, run["batches"], run["attention"])
        # ...the same latents...
        assert run["rel"] <= FP32_TOL, (key, run["rel"])
        # ...and the same bytes on every rank: the model's output is gathered whole before the denoiser hook.
        for other in per_rank[1:]:
            twin = other["runs"][key]
            assert twin["batches"] == batches and twin["attention"] == attention, (key, twin["rank"])
            assert torch.equal(twin["latents"], run["latents"]), (
                key, twin["rank"], rel_err(twin["latents"], run["latents"]))


def refuse_with_cfg_groups(order: str) -> str:
    """cfg_degree=2 with FasterCache (is_guidance_distilled=False): the same ValueError on every rank; fine after."""
    import _tiny


    pipe = _tiny.tiny_cogvideox_pipeline(seed=0)
    apply_around_enable(pipe, make_config(1, 1, cfg=2), lambda p: p.transformer.enable_cache(_faster_cache(p)), order)
    try:
        with pytest.raises(ValueError, match="FasterCache with is_guidance_distilled=False"):
            _run(pipe)
        assert not context.state().forwards  # the refusal came before the forward was marked
    finally:
        disable_parallelism(pipe)
        pipe.transformer.disable_cache()
    return "refused"


@pytest.mark.parametrize("order", ORDERS)
def test_faster_cache_batched_guidance_refused_with_cfg_groups(pool, order):
    pytest.importorskip("diffusers")
    assert pool(2).run(refuse_with_cfg_groups, order) == ["refused"] * 2

"""Tiny offline pipelines end to end with VAE parallelism (the default of `enable_parallelism(pipe, config)`).

The decoded image/video must equal one process's (fp32: max |diff| / max(1, max |ref|) <= 1e-5) under Ulysses,
ring and cfg x Ulysses, the VAE must really have been split (halo bytes counted), `vae=False` must leave it
whole, and `disable_parallelism(pipe)` must undo both.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from cp_testing import FP32_TOL, make_config, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))


def _call(kind: str, pipe, cfg: bool):
    import _tiny

    g = torch.Generator().manual_seed(0)
    common = dict(num_inference_steps=2, generator=g, output_type="pt", height=32, width=32)
    if kind == "flux":
        extra = dict(negative_prompt="blur", true_cfg_scale=2.0) if cfg else {}
        return pipe("a red cube", max_sequence_length=16, **extra, **common).images
    if kind == "wan":
        return pipe("a red cube", negative_prompt="blur", guidance_scale=2.0 if cfg else 1.0, num_frames=5,
                    max_sequence_length=16, **common).frames
    if kind == "hunyuan_video":
        extra = dict(negative_prompt="blur", true_cfg_scale=2.0) if cfg else {}
        return pipe("a red cube", num_frames=5, max_sequence_length=16,
                    prompt_template=_tiny.hunyuan_video_prompt_template(), **extra, **common).frames
    if kind == "ltx":
        # Batched guidance; 64 rows: the VAE is 16x in space, and 4 ranks need 4 latent rows to split it.
        common["height"] = 64
        return pipe("a red cube", negative_prompt="blur", guidance_scale=2.0 if cfg else 1.0, num_frames=5,
                    max_sequence_length=16, **common).frames
    raise KeyError(kind)


def pipeline_vae_parity(kind: str, ring: int, ulysses: int, cfg: int) -> list:
    import _tiny
    from cp_hooks import comm, disable_parallelism, enable_parallelism
    from cp_hooks.vae import is_vae_parallel

    build = {"flux": _tiny.tiny_flux_pipeline, "wan": _tiny.tiny_wan_pipeline,
             "hunyuan_video": _tiny.tiny_hunyuan_video_pipeline, "ltx": _tiny.tiny_ltx_pipeline}[kind]
    pipe = build(seed=0)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        reference = _call(kind, pipe, cfg > 1)
        config = make_config(ring, ulysses, cfg=cfg)
        enable_parallelism(pipe, config)
        assert is_vae_parallel(pipe.vae)
        with comm.comm_stats() as stats:
            parallel = _call(kind, pipe, cfg > 1)
        disable_parallelism(pipe)
        assert not is_vae_parallel(pipe.vae)
        enable_parallelism(pipe, config, vae=False)
        assert not is_vae_parallel(pipe.vae)
        disable_parallelism(pipe)
    err = rel_err(parallel, reference)
    assert err <= FP32_TOL, f"{kind} ring {ring} ulysses {ulysses} cfg {cfg}: {err:.2e}"
    assert stats.payload_sent.get("vae_halo", 0) > 0, "the VAE was not split"
    return [kind, ring, ulysses, cfg, err]


@pytest.mark.parametrize("kind", ["flux", "wan", "hunyuan_video", "ltx"])
def test_ulysses_and_ring(pool, kind):
    pool(2).run(pipeline_vae_parity, kind, 1, 2, 1, timeout=600)
    pool(2).run(pipeline_vae_parity, kind, 2, 1, 1, timeout=600)


@pytest.mark.parametrize("kind", ["flux", "wan", "hunyuan_video", "ltx"])
def test_cfg_times_ulysses(pool, kind):
    pool(4).run(pipeline_vae_parity, kind, 1, 2, 2, timeout=600)


def unsupported_vae_in_pipeline() -> None:
    """An unsupported VAE class: left whole by default (logged), vae=True raises before anything is enabled."""
    import logging

    import diffusers

    import _tiny
    from cp_hooks import disable_parallelism, enable_parallelism, is_parallelized
    from cp_hooks.vae import UnsupportedVAEError, is_vae_parallel

    pipe = _tiny.tiny_flux_pipeline(seed=0)
    pipe.vae = diffusers.AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4)
    config = make_config(1, 2)
    with pytest.raises(UnsupportedVAEError, match="AutoencoderTiny"):
        enable_parallelism(pipe, config, vae=True)
    assert not is_parallelized(pipe) and not is_parallelized(pipe.transformer)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("cp_hooks.vae")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        enable_parallelism(pipe, config)
    finally:
        logger.removeHandler(handler)
    assert is_parallelized(pipe) and not is_vae_parallel(pipe.vae)
    assert any("AutoencoderTiny left whole" in r.getMessage() for r in records), [r.getMessage() for r in records]
    disable_parallelism(pipe)


def test_unsupported_vae_in_pipeline(pool):
    pool(2).run(unsupported_vae_in_pipeline)

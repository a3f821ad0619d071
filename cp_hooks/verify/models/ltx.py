"""Verification of the ltx family's plans (`cp_hooks.plans.ltx`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, padding_mask, randn

_LTX = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=4,
    attention_head_dim=8,
    cross_attention_dim=32,
    num_layers=2,
    caption_channels=16,
)


def _ltx(config, g, text=9, frames=2, height=4, width=6, conditioned=False, coords=False, extra=0):
    batch, tokens = 2, frames * height * width + extra
    inputs = dict(
        hidden_states=randn(g, batch, tokens, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        timestep=torch.full((batch,), 900.0),
        encoder_attention_mask=padding_mask(batch, text, [4, text]),
        return_dict=False,
    )
    if conditioned:
        # The conditioning tokens (the first frame, or a condition's tokens in front) are clean: timestep 0.
        clean = extra or height * width
        timestep = torch.full((batch, tokens), 900.0)
        timestep[:, :clean] = 0
        inputs["timestep"] = timestep
    if coords:
        # LTXConditionPipeline: pixel coordinates (B, 3, S), time scaled by 1 / frame_rate.
        ids = grid_ids(frames, height, width).T * torch.tensor([8.0, 32.0, 32.0])[:, None]
        ids[0] = (ids[0] + 1 - 8).clamp(min=0)
        if extra:
            ids = torch.cat([ids[:, :extra], ids], dim=1)  # a condition image at frame 0, in front
        ids[0] /= 25.0
        inputs["video_coords"] = ids[None].repeat(batch, 1, 1)
    else:
        inputs.update(num_frames=frames, height=height, width=width, rope_interpolation_scale=(8 / 25, 32, 32))
    return inputs


ENTRIES = [
    ModelEntry(
        "LTXVideoTransformer3DModel",
        config=_LTX,
        cases={
            "t2v": _ltx,
            "i2v": lambda c, g: _ltx(c, g, conditioned=True),
            "condition": lambda c, g: _ltx(c, g, conditioned=True, coords=True, extra=24),
        },
        note="CFG batch with a padded text mask; I2V / condition per-token timesteps and video_coords; "
        "text cross-attention local (diffusers' _cp_plan fails on per-token timesteps)",
    ),
]

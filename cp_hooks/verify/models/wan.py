"""Verification of the wan family's plans (`cp_hooks.plans.wan`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    rope_max_seq_len=32,
)
_I2V = dict(image_dim=32, added_kv_proj_dim=32)


def _wan(config, g, frames=2, height=8, width=12, text=9, image=0, per_token_timestep=False):
    inputs = dict(
        hidden_states=randn(g, 1, config["in_channels"], frames, height, width),
        timestep=torch.full((1,), 500.0),
        encoder_hidden_states=randn(g, 1, text, config["text_dim"]),
        return_dict=False,
    )
    if image:
        inputs["encoder_hidden_states_image"] = randn(g, 1, image, config["image_dim"])
    if per_token_timestep:
        # Wan 2.2 TI2V: the conditioning first frame is clean (timestep 0), the other frames are at t.
        tokens_per_frame = (height // 2) * (width // 2)
        timestep = torch.full((1, frames * tokens_per_frame), 500.0)
        timestep[:, :tokens_per_frame] = 0
        inputs["timestep"] = timestep
    return inputs


def _skyreels_df(config, g, frames=3, height=8, width=12):
    # Diffusion forcing: one timestep per latent frame (earlier frames less noisy).
    inputs = _wan(config, g, frames, height, width)
    inputs.update(timestep=torch.tensor([[0.0, 300.0, 600.0]]), enable_diffusion_forcing=True)
    return inputs


# Two VACE blocks: the first with its input projection, the second without.
_VACE = {**_WAN, "vace_layers": [0, 1], "vace_in_channels": 12}


def _vace(config, g, frames=2, height=8, width=12, scale=None):
    # The pipeline concatenates [inactive latents, reactive latents, mask] (16 + 16 + 64 channels at full size).
    inputs = _wan(config, g, frames, height, width, text=9)
    inputs["control_hidden_states"] = randn(g, 1, config["vace_in_channels"], frames, height, width)
    if scale is not None:
        inputs["control_hidden_states_scale"] = torch.tensor(scale)
    return inputs


ENTRIES = [
    ModelEntry(
        "WanTransformer3DModel",
        config=_WAN,
        cases={
            "t2v": _wan,
            "i2v": lambda c, g: _wan(c, g, text=512, image=257),
            "ti2v": lambda c, g: _wan(c, g, per_token_timestep=True),
        },
        case_configs={"i2v": _I2V},
        note="I2V image tokens; Wan 2.2 TI2V per-token timestep",
    ),
    ModelEntry(
        "ChronoEditTransformer3DModel",
        config={**_WAN, "rope_temporal_skip_len": 2},
        cases={"edit": lambda c, g: _wan(c, g, text=512, image=257)},
        case_configs={"edit": _I2V},
    ),
    ModelEntry(
        "SkyReelsV2Transformer3DModel",
        config=_WAN,
        cases={"t2v": _wan, "i2v": lambda c, g: _wan(c, g, text=512, image=257), "diffusion_forcing": _skyreels_df},
        case_configs={"i2v": _I2V},
        note="diffusion forcing (per-frame timesteps)",
    ),
    ModelEntry(
        "WanVACETransformer3DModel",
        config=_VACE,
        cases={"control": _vace, "reference": lambda c, g: _vace(c, g, frames=3, scale=[1.0, 0.5])},
        note="control video split after its padding, at the first VACE block; per-layer control scales",
    ),
]

"""Verification of the sd3 family's plans (`cp_hooks.plans.sd3`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_SD3 = dict(
    sample_size=16,
    patch_size=2,
    in_channels=4,
    num_layers=2,
    attention_head_dim=8,
    num_attention_heads=4,
    joint_attention_dim=32,
    caption_projection_dim=32,
    pooled_projection_dim=16,
    out_channels=4,
    pos_embed_max_size=16,
)


def _sd3(config, g, text=13, height=8, width=10):
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        timestep=randn(g, 1).abs() * 500,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "SD3Transformer2DModel",
        config=_SD3,
        cases={"sd3": _sd3, "sd3.5": _sd3},
        case_configs={"sd3.5": dict(dual_attention_layers=(0,), qk_norm="rms_norm")},
        anything=True,
        note="odd text length (SD3: 333 tokens); SD3.5 dual attention and qk-norm",
    ),
]

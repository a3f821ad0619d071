"""Verification of the cogvideox family's plans (`cp_hooks.plans.cogvideox`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_COG = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    time_embed_dim=16,
    text_embed_dim=16,
    num_layers=2,
    sample_width=12,
    sample_height=8,
    sample_frames=5,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=13,
)


def _cogvideox(config, g, text=13, frames=2, height=8, width=12, rotary=False):
    inputs = dict(
        hidden_states=randn(g, 1, frames, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 1, text, config["text_embed_dim"]),
        timestep=torch.tensor([500]),
        return_dict=False,
    )
    if rotary:  # CogVideoX 1.5 / 5B: the pipeline passes a (cos, sin) table for the video tokens
        tokens = frames * (height // 2) * (width // 2)
        angles = randn(g, tokens, config["attention_head_dim"])
        inputs["image_rotary_emb"] = (angles.cos(), angles.sin())
    return inputs


ENTRIES = [
    ModelEntry(
        "CogVideoXTransformer3DModel",
        config=_COG,
        cases={"sincos": _cogvideox, "rotary": lambda c, g: _cogvideox(c, g, rotary=True)},
        case_configs={"rotary": dict(use_rotary_positional_embeddings=True)},
        anything=True,
        note="226 text tokens (odd per rank at 4 ranks); 1.0 sincos and 1.5 rotary positions",
    ),
]

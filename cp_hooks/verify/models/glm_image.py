"""Verification of the glm_image family's plans (`cp_hooks.plans.glm_image`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_GLM_IMAGE = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    attention_head_dim=8,
    num_attention_heads=4,
    text_embed_dim=16,
    time_embed_dim=16,
    condition_dim=8,
    prior_vq_quantizer_codebook_size=64,
)


def _glm_image(config, g, text=5, height=8, width=12, drop=False):
    # One call per CFG branch, batch 1: the conditional branch keeps the prior tokens, the unconditional
    # one drops them all. The glyph text is the valid ByT5 tokens of the quoted text (odd length).
    tokens = (height // config["patch_size"]) * (width // config["patch_size"])
    prior = torch.randint(0, config["prior_vq_quantizer_codebook_size"], (1, tokens), generator=g)
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 1, text, config["text_embed_dim"]),
        prior_token_id=prior,
        prior_token_drop=torch.full_like(prior, drop, dtype=torch.bool),
        timestep=torch.tensor([799.0]),
        target_size=torch.tensor([[height * 8.0, width * 8.0]]),
        crop_coords=torch.zeros(1, 2),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "GlmImageTransformer2DModel",
        config=_GLM_IMAGE,
        cases={"cond": _glm_image, "uncond": lambda c, g: _glm_image(c, g, text=3, drop=True)},
        anything=True,
        note="prior-token embeddings added before the split; odd glyph text lengths; the editing KV cache "
        "is not in the cases",
    ),
]

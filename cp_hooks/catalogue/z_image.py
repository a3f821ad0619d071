"""Z-Image: text-to-image with a CFG batch whose prompts have different lengths (lists, as the pipeline passes).

The pipeline passes one latent (C, 1, H, W) and one caption (valid tokens only, (L_i, D)) per sample;
captions of 40 and 9 tokens pad to 64 and 32, so the unified sequences differ and a padding mask appears.
"""

import torch

from . import ModelEntry
from ._inputs import randn

_Z_IMAGE = dict(in_channels=4, dim=32, n_layers=2, n_refiner_layers=1, n_heads=4, n_kv_heads=4, cap_feat_dim=16,
                axes_dims=[2, 2, 4], axes_lens=[128, 32, 32])


def _z_image(config, g, captions=(40, 9), height=8, width=12):
    return dict(
        x=[randn(g, config["in_channels"], 1, height, width) for _ in captions],
        t=torch.full((len(captions),), 0.3),
        cap_feats=[randn(g, length, config["cap_feat_dim"]) for length in captions],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("ZImageTransformer2DModel", _Z_IMAGE, {"t2i": _z_image},
               note="CFG batch of captions with different lengths (padding mask); refiners run whole; not the omni "
                    "(SigLIP) mode or ControlNet residuals"),
]

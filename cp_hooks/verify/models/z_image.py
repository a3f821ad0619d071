"""Verification of the z_image family's plans (`cp_hooks.plans.z_image`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_Z_IMAGE = dict(
    in_channels=4,
    dim=32,
    n_layers=2,
    n_refiner_layers=1,
    n_heads=4,
    n_kv_heads=4,
    cap_feat_dim=16,
    axes_dims=[2, 2, 4],
    axes_lens=[128, 32, 32],
)


def _z_image(config, g, captions=(40, 9), height=8, width=12):
    return dict(
        x=[randn(g, config["in_channels"], 1, height, width) for _ in captions],
        t=torch.full((len(captions),), 0.3),
        cap_feats=[randn(g, length, config["cap_feat_dim"]) for length in captions],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "ZImageTransformer2DModel",
        config=_Z_IMAGE,
        cases={"t2i": _z_image},
        note="CFG batch of captions with different lengths (padding mask); refiners run whole; not the omni "
        "(SigLIP) mode or ControlNet residuals",
    ),
]

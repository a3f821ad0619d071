"""Z-Image (ZImageTransformer2DModel): one unified [image, caption] sequence, split for the main layers.

`forward` patchifies each sample, runs the noise refiner on the image tokens and the context refiner on the
caption tokens, and concatenates them per sample into the unified sequence, padded to the longest sample
with a key-padding mask. The refiners run whole on every rank (their attention marked local: two small
layers each), and the unified sequence is split at the first main layer. The rotary table, the padding
mask and (omni mode) the per-token noise mask reach every layer from `forward` whole, so every layer splits
its own copy. The final layer is gathered at its last projection, before the per-sample unpatchify.
Sequence lengths are multiples of 32 (every part is padded to 32 tokens).

Not covered: the omni mode with SigLIP features (its `siglip_refiner` exists only in omni configs, so this
class plan cannot mark it local), and ControlNet residuals (`controlnet_block_samples`, a dict of
full-length tensors added after the layers, which a plan cannot split).
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_PER_TOKEN = ContextParallelInput(split_dim=1, expected_dims=2)

Z_IMAGE = {
    "noise_refiner.*.attention": LocalAttention(),
    "context_refiner.*.attention": LocalAttention(),
    "layers.0": {"x": ContextParallelInput(split_dim=1, expected_dims=3)},
    "layers.*": {
        "attn_mask": _PER_TOKEN,
        "freqs_cis": ContextParallelInput(split_dim=1, expected_dims=3),
        "noise_mask": _PER_TOKEN,
    },
    "all_final_layer.*": {"noise_mask": _PER_TOKEN},
    "all_final_layer.*.linear": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


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
    ModelEntry("ZImageTransformer2DModel", Z_IMAGE, _Z_IMAGE, {"t2i": _z_image},
               note="CFG batch of captions with different lengths (padding mask); refiners run whole; not the omni "
                    "(SigLIP) mode or ControlNet residuals"),
]

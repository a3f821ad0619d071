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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

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


PLANS = {
    "ZImageTransformer2DModel": PlanDeclaration(plan=Z_IMAGE),
}

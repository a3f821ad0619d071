"""ERNIE-Image (ErnieImageTransformer2DModel): one [image, text] sequence, sequence-first, split at the layers.

`forward` concatenates the image tokens and the padded text along dim 0 (the layers work on (S, B, H)),
and builds, for the whole sequence, the rotary table (B, S, 1, head_dim; the image ids carry each sample's
text length), the key-padding mask (B, 1, 1, S) and the six modulation tensors, expanded to (S, B, H).
All of them reach every layer from `forward` whole, so every layer splits its own copies: the modulation
along dim 0, the rotary table and the mask along the sequence dim (the mask then covers exactly the local
keys). The tokens are split once, at the first layer; later layers get them split from the layer before.
The final projection is gathered (along dim 0) before `forward` keeps the first N_img rows and unpatchifies.
The text length is the longest prompt of the CFG batch: anything flags.

A fresh model zero-initialises `adaLN_modulation` (so every gate is 0 and the layers are the identity) and
`final_linear` (so the output is exactly 0): the entry draws those weights again after building (`redraw`),
else the check would compare zeros and no gradient would reach the layers.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_SEQ_FIRST = ContextParallelInput(split_dim=0, expected_dims=3)

ERNIE_IMAGE = {
    "layers.0": {"x": _SEQ_FIRST},
    "layers.*": {
        "rotary_pos_emb": ContextParallelInput(split_dim=1, expected_dims=4),
        "temb": [_SEQ_FIRST] * 6,
        "attention_mask": ContextParallelInput(split_dim=3, expected_dims=4),
    },
    "final_linear": ContextParallelOutput(gather_dim=0, expected_dims=3),
}


PLANS = {
    "ErnieImageTransformer2DModel": PlanDeclaration(plan=ERNIE_IMAGE),
}

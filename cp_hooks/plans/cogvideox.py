"""CogVideoX (CogVideoXTransformer3DModel): joint text + video attention (text first), both split.

`patch_embed` embeds text and video together (adding sincos positions to the video), and `forward` slices
the two apart by the full text length; both are split at the first block. The 3-D rotary table
(CogVideoX 1.5 / 5B) is computed by the pipeline for the video tokens only and split with them. 226 text
tokens do not divide by 4: use the anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

COGVIDEOX = {
    "": {"image_rotary_emb": [_ROPE, _ROPE]},
    "transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "CogVideoXTransformer3DModel": PlanDeclaration(plan=COGVIDEOX),
}

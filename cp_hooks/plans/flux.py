"""Flux (FluxTransformer2DModel): joint text+image attention; text and image tokens both split.

Rotary embeddings are computed from the split ids, so they stay aligned with their tokens.
"""

from ..plan import ContextParallelInput, ContextParallelOutput

FLUX = {
    "": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "img_ids": ContextParallelInput(split_dim=0, expected_dims=2),
        "txt_ids": ContextParallelInput(split_dim=0, expected_dims=2),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

PLANS = {"FluxTransformer2DModel": FLUX}

"""Wan 2.x (WanTransformer3DModel): video self-attention split; text cross-attention stays local.

The text (and I2V image) context is replicated: diffusers' Wan processor passes parallel_config=None for
cross-attention, so those calls run locally. Rotary embeddings are split after they are computed for the
full video grid.
"""

from ..plan import ContextParallelInput, ContextParallelOutput

WAN = {
    "rope": {
        0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
    },
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

PLANS = {"WanTransformer3DModel": WAN}

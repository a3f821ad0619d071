"""Flux family (Flux.1, Flux.2, Chroma): joint text + image attention; text and image tokens both split.

Rotary embeddings are computed from the split position ids, so they stay aligned with their tokens: the
ids must be split exactly like the tokens they describe. Flux.2's pipeline passes ids as (B, S, 4),
Flux.1 and Chroma as (S, 3).
"""

from ..plan import ContextParallelInput, ContextParallelOutput


def _joint_plan(ids_dim: int) -> dict:
    ids = ContextParallelInput(split_dim=ids_dim - 2, expected_dims=ids_dim)
    return {
        "": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
            "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
            "img_ids": ids,
            "txt_ids": ids,
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


FLUX = _joint_plan(ids_dim=2)
FLUX2 = _joint_plan(ids_dim=3)
# Chroma's optional `attention_mask` is not split: its blocks expand it to a (B, 1, S, S) query x key mask,
# which a local shard cannot express; cp_hooks refuses it with an error rather than compute a wrong result.
CHROMA = _joint_plan(ids_dim=2)

PLANS = {"FluxTransformer2DModel": FLUX, "Flux2Transformer2DModel": FLUX2, "ChromaTransformer2DModel": CHROMA}

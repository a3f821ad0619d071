"""Flux family (Flux.1, Flux.2, Flux.3, Chroma): joint text + image attention; text and image tokens both split.

Rotary embeddings are computed from the split position ids, so they stay aligned with their tokens: the
ids must be split exactly like the tokens they describe. Flux.2's pipeline passes ids as (B, S, 4),
Flux.1 and Chroma as (S, 3).

Flux.3 (Flux3Transformer2DModel) has three token modes, text, image and (optional) reference images, each
passed to `forward` with its own (S, 4) ids, so each is split at the input with its ids. The per-mode blocks
attend within one mode: their attention is context-parallel over that mode's shards. The joint blocks
concatenate the local [text, image, reference] shards with their rotary tables in the same order, and
attention needs no particular key order. The per-token modulation is built in `forward` from the local
lengths (`expand` to the shard's tokens), and the output slice `content[:, :image_seq_len]` takes the local
image tokens, since `image_seq_len` is read from the split `hidden_states`. The text window is padded to a
multiple of 80 tokens, but images and references of any size on the 16-pixel grid give odd token counts:
anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration


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
# Flux.3: three token modes, each split with its own ids (see the module docstring).
_FLUX3_IDS = ContextParallelInput(split_dim=0, expected_dims=2)
FLUX3 = {
    "": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "image_cond_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "img_ids": _FLUX3_IDS,
        "txt_ids": _FLUX3_IDS,
        "image_cond_ids": _FLUX3_IDS,
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}
# Chroma: ChromaPipeline passes a (B, S_txt + S_img) boolean mask, [text padding, ones for the image], and
# every block expands it to v[q] & v[k], which cp_hooks reads as a key-padding mask over the local [text, image]
# tokens (padded text queries get zero, as SDPA gives). So it is split like the blocks' sequence, stream by
# stream: its text part with the text, its image part with the image.
CHROMA = _joint_plan(ids_dim=2)
CHROMA[""] = {
    **CHROMA[""],
    "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="image"),
    "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="text"),
    "attention_mask": ContextParallelInput(split_dim=1, expected_dims=2, segments=("text", "image")),
}


PLANS = {
    "FluxTransformer2DModel": PlanDeclaration(plan=FLUX),
    "Flux2Transformer2DModel": PlanDeclaration(plan=FLUX2),
    "Flux3Transformer2DModel": PlanDeclaration(plan=FLUX3),
    "ChromaTransformer2DModel": PlanDeclaration(plan=CHROMA),
}

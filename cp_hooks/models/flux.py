"""Flux family (Flux.1, Flux.2, Chroma): joint text + image attention; text and image tokens both split.

Rotary embeddings are computed from the split position ids, so they stay aligned with their tokens: the
ids must be split exactly like the tokens they describe. Flux.2's pipeline passes ids as (B, S, 4),
Flux.1 and Chroma as (S, 3).
"""

import torch

from ..catalogue import ModelEntry
from ..catalogue._inputs import grid_ids, randn
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


# Flux.1: 512 T5 tokens; 2x2-packed latents become (B, H*W, 64) tokens.
_FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
             axes_dims_rope=(4, 6, 6))


def _flux(config, g, text=8, height=4, width=6, reference=False):
    img_ids = grid_ids(height, width, lead=1)
    tokens = height * width
    if reference:  # Kontext: the reference image's tokens follow the target's, with first id axis 1
        ref_ids = grid_ids(height, width, lead=1)
        ref_ids[:, 0] = 1
        img_ids = torch.cat([img_ids, ref_ids])
        tokens *= 2
    return dict(
        hidden_states=randn(g, 1, tokens, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        timestep=randn(g, 1).abs(), guidance=randn(g, 1).abs() + 3,
        img_ids=img_ids, txt_ids=torch.zeros(text, 3), return_dict=False,
    )


# Flux.2: 4-axis ids (T, H, W, L) shaped (B, S, 4) by the pipeline.
_FLUX2 = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
              num_attention_heads=4, joint_attention_dim=32, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4))


def _flux2(config, g, text=8, height=4, width=6):
    txt_ids = grid_ids(1, 1, 1, text)
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        timestep=randn(g, 1).abs(), guidance=randn(g, 1).abs() + 3,
        img_ids=grid_ids(1, height, width, 1)[None], txt_ids=txt_ids[None], return_dict=False,
    )


# Chroma: Flux without the pooled / guidance embedding; a distilled modulation approximator.
_CHROMA = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
               num_attention_heads=4, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
               approximator_num_channels=16, approximator_hidden_dim=32, approximator_layers=1)


def _chroma(config, g, text=8, height=4, width=6):
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        timestep=randn(g, 1).abs(), img_ids=grid_ids(height, width, lead=1), txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("FluxTransformer2DModel", FLUX, _FLUX, {"t2i": _flux, "kontext": lambda c, g: _flux(c, g, reference=True)},
               note="Kontext: reference-image tokens concatenated to the sequence"),
    ModelEntry("Flux2Transformer2DModel", FLUX2, _FLUX2, {"t2i": _flux2}),
    ModelEntry("ChromaTransformer2DModel", CHROMA, _CHROMA, {"t2i": _chroma},
               note="without ChromaPipeline's text mask: its blocks expand it to a query x key mask (see below)"),
]

"""Lumina family: Lumina-Image 2.0 (Lumina2Transformer2DModel) served; Lumina-Next (LuminaNextDiT2DModel) refused.

Lumina2: `forward` runs a context refiner over the Gemma text (with its padding mask) and a noise refiner
over the image tokens, then packs each sample as [its valid text tokens, its image tokens], padded to the
longest sample, with a (B, S) key-padding mask (only when the samples' lengths differ) and a per-sample
rotary table (B, S, D/2) built from the per-sample text lengths. The packing needs every text and image
token of each sample, so the two refiners (one or two small layers each) run whole on every rank, their
attention marked local, and the packed sequence is split at the first main layer. The mask and the rotary
table reach every layer from `forward` whole, so every layer splits its own copy; the processor views the
mask as (B, 1, 1, S_local), a key-padding mask that cp_hooks carries with its keys. `norm_out` (its last
projection gives one row per token) is gathered before the per-sample unpatchify. Its processor repeats
the grouped key/value heads itself before calling SDPA. Text lengths follow the prompt: anything flags.

Lumina-Next: see UNSUPPORTED. Its plan would be simple (split the patch embedding's tokens, mask and
rotary table; the text cross-attention `attn2` local; gather at `norm_out`), and it is exact when the
pipeline is called with `proportional_attn=False`; but the pipeline's default passes `base_sequence_length`,
and the processor then scales the self-attention softmax by `sqrt(log(sequence_length, base))` with
`sequence_length` read from the query tensor it receives: on a rank that is the local shard's length.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

LUMINA2 = {
    "context_refiner.*.attn": LocalAttention(),
    "noise_refiner.*.attn": LocalAttention(),
    "layers.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "layers.*": {
        "attention_mask": ContextParallelInput(split_dim=1, expected_dims=2),
        "image_rotary_emb": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


# 4 query heads sharing 2 key/value heads (the released model: 24 and 8); rotary axes sum to head_dim.
_LUMINA2 = dict(sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=1, num_refiner_layers=1,
                num_attention_heads=4, num_kv_heads=2, multiple_of=16, axes_dim_rope=(2, 2, 4),
                axes_lens=(32, 16, 16), cap_feat_dim=16)


def _lumina2(config, g, text=12, valid=(9,), height=8, width=12):
    # The pipeline pads the Gemma text to 256 tokens with a mask and calls the model once per CFG branch,
    # with a batch of prompts; the timestep runs from 0 (noise) to 1.
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 0.3),
        encoder_hidden_states=randn(g, batch, text, config["cap_feat_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("Lumina2Transformer2DModel", LUMINA2, _LUMINA2,
               {"t2i": _lumina2, "prompts": lambda c, g: _lumina2(c, g, valid=(9, 4))}, anything=True,
               note="refiners run whole; packed [text, image] sequence split; batch of prompts with different "
                    "text lengths (padding mask); grouped key/value heads"),
]

UNSUPPORTED = {
    "LuminaNextDiT2DModel": (
        "LuminaPipeline's default proportional attention (proportional_attn=True passes base_sequence_length) "
        "scales the self-attention softmax by sqrt(log(sequence_length, base_sequence_length)), with "
        "sequence_length read from the queries the processor receives: on each rank the local shard's length, "
        "so every rank would use a wrong scale, silently (a plan splitting the patch embedding's tokens, mask and "
        "rotary table, with attn2 local, is exact with proportional_attn=False) (needs: a plan spec that rewrites "
        "or refuses a forward keyword argument, e.g. base_sequence_length in cross_attention_kwargs)"
    ),
}

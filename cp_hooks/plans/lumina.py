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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

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


PLANS = {
    "Lumina2Transformer2DModel": PlanDeclaration(plan=LUMINA2),
}

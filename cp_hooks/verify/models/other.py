"""Diffusers transformers that are not diffusion transformers over a long token sequence: none can be served.

Each reason below says what in the model's `forward` rules a plan out.
"""

ENTRIES: list = []

UNSUPPORTED = {
    "T5FilmDecoder": (
        "its attention is not routed: its layers are built with scale_qk=False, for which diffusers picks the "
        "classic AttnProcessor (scores by baddbmm and softmax in Attention.get_attention_scores, neither SDPA nor "
        "dispatch_attention_fn), so each rank would attend over its own frames only. A plan is otherwise simple: "
        "split the 256 mel frames at the first decoder layer, split the rows of every layer's (B, 1, frames, "
        "encodings) cross-attention mask with them, mark the cross-attention local and gather at spec_out "
        "(needs: routing of AttnProcessor's get_attention_scores/bmm attention, or a plan option that swaps a "
        "module's processor for AttnProcessor2_0 with the module's scale)"
    ),
    "PriorTransformer": (
        "not a sequence to split: unCLIP's prior denoises one CLIP image embedding, and its sequence is the 77 text "
        "tokens plus 4 single-vector tokens (projection, timestep, image embedding, prediction token), under a causal "
        "mask that `forward` adds to the text padding mask and repeats per head into a (batch * heads, 81, 81) query x "
        "key mask, which cannot be split with the keys; the output is the last token's state only"
    ),
    "TransformerTemporalModel": (
        "a temporal-attention layer inside video UNets, not a model over a token sequence: it reshapes its "
        "(batch * frames, C, H, W) input by the int `num_frames` into (batch * H * W, frames, C), so its attention "
        "sequence is the 16-32 frames of each pixel with the pixels in the batch dimension, and its GroupNorm "
        "takes statistics over all frames and pixels; a split of the frames (the leading dim, mixed with the batch) "
        "breaks the reshape by `num_frames`"
    ),
    "RFD4ProteinaTransformer": (
        "protein structure model with a pair representation: every attention adds a per-head (B, H, L, L) bias "
        "projected from (B, L, L, C) pair features (and a residue-pair validity mask), which varies along queries "
        "and heads and cannot be split with the keys, and the pair features are updated by triangular "
        "multiplicative updates that mix each pair with every third residue, so they need the whole L x L map"
    ),
}

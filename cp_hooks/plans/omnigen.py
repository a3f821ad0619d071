"""OmniGen (OmniGenTransformer2DModel): one packed sequence under a whole block-causal mask.

`forward` embeds the condition (text ids, with the input images' VAE latents patch-embedded into their
placeholder tokens), a time token and the noisy image's patches, and concatenates them with `torch.cat` into
one (B, S, D) sequence, S = condition + 1 + image tokens. Nothing before that concatenation is a module
whose output is the packed sequence, so it is split at the first layer's input (`layers.0`); later layers get
the split tensor from it. The rotary table `rope` returns, (cos, sin) of shape (S, head_dim), is computed
once from the whole `position_ids` (of sample 0 only: the `[0]` in `OmniGenSuScaledRotaryEmbedding`) and
handed to every layer, so its two outputs are split along dim 0 like the tokens.

OmniGenPipeline's collator (`OmniGenCollator.create_mask`) builds a float (B, S, S) mask over that sequence:
causal over the condition and time tokens, the image tokens bidirectional among themselves and seeing every
condition token, each input image bidirectional within its placeholder span, the left padding of shorter
prompts masked as keys (its own rows attend everything, so no query row is fully masked). `forward` turns it
into an additive (B, 1, S, S) mask, `(1 - mask) * finfo.min`, the same on every rank, and the processor hands
it to `F.scaled_dot_product_attention` (routed by cp_hooks) with the local q / k of the layer: a query x key
mask over the whole sequence. The plan leaves it whole: its order is the packed sequence's, which is split
once, as a whole, so rank r's queries are rows [offset_r, offset_r + len_r) of it and cp_hooks takes those
rows and every key block's columns. Splitting the mask would be refused (its rows would no longer cover the
whole sequence).

`forward` keeps the output image by a plain int counted from the end of the whole sequence
(`hidden_states[:, -num_tokens_for_output_image:]`), so the sequence is gathered before that slice, at the
output of the final `norm` (one row per token).

The batch cannot be split over cfg groups: the rotary table is built from `position_ids[0]` for every
sample, so a group holding the second half of [prompts, negatives] would rotate by its own first sample's
positions. A uniform shift of a sample's positions leaves its attention unchanged, but when sample 0 is
left-padded, its padding positions (all 0) fall on valid tokens of a longer sample (two prompts of 7 and 5
tokens with an 11-token negative: the negatives run alone differ from their rows of the whole batch by
0.07). And `input_image_sizes` is keyed by the sample's index in the whole batch, with `input_img_latents` a
flat list over it. Prompt and image lengths are arbitrary: anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TABLE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)  # (S, head_dim) cos or sin

OMNIGEN = {
    "layers.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "rope": {0: _TABLE, 1: _TABLE},
    "norm": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "OmniGenTransformer2DModel": PlanDeclaration(
        plan=OMNIGEN,
        no_batch_split="its rotary table is built from position_ids[0] for every sample, so a group holding the other "
        "half of the batch would rotate by its own first sample's positions (unequal when the prompts' "
        "lengths differ), and input_image_sizes is keyed by the sample's index in the whole batch, with"
        " input_img_latents a flat list over it.",
    ),
}

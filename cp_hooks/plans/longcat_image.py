"""LongCat-Image (LongCatImageTransformer2DModel): Flux-style joint text + image attention, both streams split.

The dual-stream blocks concatenate [text, image] queries, keys and values inside the processor and the
single-stream blocks concatenate the two streams before their attention, both in the local order
[text shard, image shard]. `forward` computes the rotary tables from `cat(txt_ids, img_ids)`, so the
(S, 3) ids are split exactly like their tokens and the tables come out in that same local order. No mask
reaches the transformer. The edit pipeline appends the reference image's tokens (and ids, modality 2) to
the noisy image's, so they are split with the image stream, and takes the first image tokens of the
gathered output. The text is the prompt (at most 512 tokens) plus the chat template's prefix and suffix:
its length is odd in general, so the model is verified with the anything flags and an odd text.
"""

from __future__ import annotations

from cp_hooks.plans.flux import FLUX
from cp_hooks.plans.specs import PlanDeclaration

# Flux.1's plan: text, image and their (S, 3) ids split at the model's input, gathered at proj_out.
LONGCAT_IMAGE = FLUX


PLANS = {
    "LongCatImageTransformer2DModel": PlanDeclaration(plan=LONGCAT_IMAGE),
}

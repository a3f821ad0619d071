"""Ovis-Image (OvisImageTransformer2DModel): Flux-style joint text + image attention, both streams split.

The same layout as Flux.1 and LongCat-Image: the dual-stream processor concatenates [text, image] queries,
keys and values, the single-stream blocks concatenate the streams before their attention, and `forward`
computes the rotary tables from `cat(txt_ids, img_ids)`, so the (S, 3) ids are split exactly like their
tokens (the deprecated (1, S, 3) ids are not accepted by the plan: the pipeline passes (S, 3)). The text is
padded to `max_sequence_length` (any value up to 256) with the padding's embeddings zeroed and no mask, and
images on the 16-pixel grid give odd token counts: anything flags, odd text and image lengths.
"""

from __future__ import annotations

from cp_hooks.plans.flux import FLUX
from cp_hooks.plans.specs import PlanDeclaration

# Flux.1's plan: text, image and their (S, 3) ids split at the model's input, gathered at proj_out.
OVIS_IMAGE = FLUX


PLANS = {
    "OvisImageTransformer2DModel": PlanDeclaration(plan=OVIS_IMAGE),
}

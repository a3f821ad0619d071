"""PRX (PRXTransformer2DModel): image queries attend to [text, image] keys; text and image both split.

The text is keys and values only (each block projects it, it is never updated), but it shares one attention
call with the image keys, so it must be split too, or each rank would count every text key once. Each rank
then attends its image queries to [its text keys, its image keys]; the order of keys does not matter, and
the processor's key-padding mask (the text mask followed by ones for the local image tokens) stays aligned
with them when the text mask is split with the text. Both are split once, at the model's input (the text
projection `txt_in` is per token, and every block receives the same split text and mask).

The image is split after its patch projection (`img_in`, one linear layer or PRX-7B's two-layer
bottleneck), the rotary table (computed by `pe_embedder` for the whole grid, (B, 1, S, D/2, 2, 2)) with it,
and the tokens are gathered at `final_layer`, before `seq2img`.

The blocks' modulation starts at zero in diffusers (a freshly built model would ignore its blocks and the
forward check would prove nothing), so the catalogue's tiny model draws it again from the seed (`redraw`).
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)

PRX = {
    "": {
        "encoder_hidden_states": _TOKENS,
        "attention_mask": ContextParallelInput(split_dim=1, expected_dims=2),
    },
    "img_in": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "pe_embedder": {0: ContextParallelInput(split_dim=2, expected_dims=6, split_output=True)},
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "PRXTransformer2DModel": PlanDeclaration(plan=PRX),
}

"""Nucleus-MoE Image (NucleusMoEImageTransformer2DModel): image queries over [image, text] keys; MoE gathered.

Attention: only the image has queries; each block projects the (never updated) text to keys and values that
join the image keys in one attention call, so the text is split too (whole, each rank would count every text
key once). `forward` needs the whole text (its length sizes the text rotary table), so every block splits
its own copy; the image is split after `img_in`, and both rotary tables (`pos_embed`: image, text; computed
for the full lengths) are split with their tokens. Gathered at `proj_out`.

Mixture of experts: the MoE blocks route by expert choice: each expert takes the top `capacity` tokens of
the whole sequence (`torch.topk` along it), so the routing mixes tokens. The plan gathers the MoE layer's
inputs (modulated and unmodulated tokens), routes the whole sequence identically on every rank and splits
its output again. The dense blocks' feed-forward has the same module name (`img_mlp`), so it is gathered
and split too (exact, a little redundant work).

Not served: a padded text mask. NucleusMoEImagePipeline passes `encoder_hidden_states_mask` only when some
prompt token is padding (it drops an all-True mask); `forward` then builds one [image, text] key mask for
every block, which cannot be split so that each rank gets [its image, its text] part. The attention refuses
it on every rank (its length is not the local key count) instead of computing a wrong result.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

NUCLEUS_MOE = {
    "img_in": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "pos_embed": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.*": {"encoder_hidden_states": _TOKENS},
    "transformer_blocks.*.img_mlp": {
        "hidden_states": _GATHER,
        "hidden_states_unmodulated": _GATHER,
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "NucleusMoEImageTransformer2DModel": PlanDeclaration(plan=NUCLEUS_MOE),
}

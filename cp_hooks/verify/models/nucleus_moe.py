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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

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


# Block 0 dense, block 1 MoE; 4 experts each choosing S/4 tokens; grouped-query attention (2 key/value heads).
_NUCLEUS = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                num_attention_heads=4, num_key_value_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
                mlp_ratio=4.0, moe_enabled=True, dense_moe_strategy="leave_first_block_dense", num_experts=4,
                moe_intermediate_dim=32, capacity_factors=1.0)


def _nucleus(config, g, text=8, height=4, width=6):
    # The pipeline packs 2x2 latent patches into tokens and runs CFG as two calls of batch 1; its text is padded
    # to a multiple of 8 and the mask dropped when every token is valid.
    return dict(
        hidden_states=randn(g, 1, height * width, config["in_channels"]),
        img_shapes=[(1, height, width)],
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        encoder_hidden_states_mask=None,
        timestep=torch.full((1,), 0.8),
        return_dict=False,
    )


def _fill_experts(model, g):
    """diffusers creates the routed experts' weights with `torch.empty` (they only ever come from a checkpoint), so
    a tiny model would hold whatever memory each process had: fill them from the seed, like every other weight."""
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "SwiGLUExperts":
                for weight in (module.gate_up_proj, module.down_proj):
                    weight.copy_(torch.randn(weight.shape, generator=g) * weight.shape[1] ** -0.5)


ENTRIES = [
    ModelEntry("NucleusMoEImageTransformer2DModel", NUCLEUS_MOE, _NUCLEUS, {"t2i": _nucleus}, prepare=_fill_experts,
               note="image queries over [image, text] keys (both split); expert-choice MoE gathered around; "
                    "without a padded text mask (refused with an error, see below)"),
]

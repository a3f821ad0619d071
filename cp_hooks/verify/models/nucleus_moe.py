"""Verification of the nucleus_moe family's plans (`cp_hooks.plans.nucleus_moe`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

# Block 0 dense, block 1 MoE; 4 experts each choosing S/4 tokens; grouped-query attention (2 key/value heads).
_NUCLEUS = dict(
    patch_size=2,
    in_channels=16,
    out_channels=4,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
    mlp_ratio=4.0,
    moe_enabled=True,
    dense_moe_strategy="leave_first_block_dense",
    num_experts=4,
    moe_intermediate_dim=32,
    capacity_factors=1.0,
)


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
    ModelEntry(
        "NucleusMoEImageTransformer2DModel",
        config=_NUCLEUS,
        cases={"t2i": _nucleus},
        prepare=_fill_experts,
        note="image queries over [image, text] keys (both split); expert-choice MoE gathered around; "
        "without a padded text mask (refused with an error, see below)",
    ),
]

"""Verification of the auraflow family's plans (`cp_hooks.plans.auraflow`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_AURAFLOW = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_mmdit_layers=1,
    num_single_dit_layers=1,
    attention_head_dim=8,
    num_attention_heads=4,
    joint_attention_dim=16,
    caption_projection_dim=32,
    pos_embed_max_size=64,
)


def _auraflow(config, g, text=8, height=8, width=12):
    # CFG batch [negative, positive]; the pipeline multiplies padded T5 tokens by their mask (zeros).
    text_embeds = randn(g, 2, text, config["joint_attention_dim"])
    text_embeds[0, 3:] = 0
    return dict(
        hidden_states=randn(g, 2, config["in_channels"], height, width),
        encoder_hidden_states=text_embeds,
        timestep=torch.tensor([0.7, 0.7]),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "AuraFlowTransformer2DModel",
        config=_AURAFLOW,
        cases={"t2i": _auraflow},
        note="8 register tokens prepended to the text; joint blocks, then single blocks over the local [text, image]",
    ),
]

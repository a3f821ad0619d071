"""AuraFlow (AuraFlowTransformer2DModel): joint text + image attention (MMDiT, then single DiT), both split.

`pos_embed` patchifies the latent and adds learned absolute positions for the whole image; `forward` then
prepends 8 learned register tokens to the projected text. Both streams are split at the first joint block
(after the register tokens are in place), so every rank holds [a piece of register + text, a piece of the
image]. The single blocks concatenate the local text and image shards and slice them apart again by the
*local* text length, which stays consistent on every rank. There are no rotary tables and no masks (the
pipeline zeroes the padded T5 tokens instead), and attention is order-free over keys, so the local
[text, image] order needs nothing more. The processor calls SDPA directly, so the SDPA router carries it.
The image is gathered at `proj_out`, before the unpatchify reshape. 256 T5 tokens + 8 registers divide
by the usual degrees.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

AURAFLOW = {
    "joint_transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_AURAFLOW = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_mmdit_layers=1,
                 num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=4, joint_attention_dim=16,
                 caption_projection_dim=32, pos_embed_max_size=64)


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
    ModelEntry("AuraFlowTransformer2DModel", AURAFLOW, _AURAFLOW, {"t2i": _auraflow},
               note="8 register tokens prepended to the text; joint blocks, then single blocks over the local "
                    "[text, image]"),
]

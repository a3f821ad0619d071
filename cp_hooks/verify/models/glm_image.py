"""GLM-Image (GlmImageTransformer2DModel): joint glyph text + image attention (text first), both split.

`forward` adds the prior-token embeddings (one per image token, from the autoregressive stage) to the
projected image before the first block, so the image and the glyph text are split at the first block,
after that sum; the 2-D rotary table (cos, sin; one row per image token, computed by `rope` for the whole
grid) is split like the image. The processor concatenates [local text, local image] and rotates the rows
after the local text length with the local table: aligned. The glyph text length follows the prompt
(anything flags). The optional `attention_mask` builds a (B, 1, S, S) query x key float mask, which
cp_hooks refuses with an error; the pipeline does not pass it.

Image editing with `kv_caches`: the condition images' keys and values are written in a first pass and
prepended to the keys in later passes. Under the plan each rank writes and reads its own shard, so every
rank's keys are [its cached shard, its current shard], together all keys in another order (no mask, so
the order is harmless). The catalogue cannot express that two-pass sequence as one input case, so it is
not among the cases below; a hand-run script (write a 6 x 8 condition image, then read and skip passes)
matched one process to 1.6e-7 under Ulysses 2 and ring 2.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

GLM_IMAGE = {
    "rope": {0: _ROPE, 1: _ROPE},
    "transformer_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_GLM_IMAGE = dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                  num_attention_heads=4, text_embed_dim=16, time_embed_dim=16, condition_dim=8,
                  prior_vq_quantizer_codebook_size=64)


def _glm_image(config, g, text=5, height=8, width=12, drop=False):
    # One call per CFG branch, batch 1: the conditional branch keeps the prior tokens, the unconditional
    # one drops them all. The glyph text is the valid ByT5 tokens of the quoted text (odd length).
    tokens = (height // config["patch_size"]) * (width // config["patch_size"])
    prior = torch.randint(0, config["prior_vq_quantizer_codebook_size"], (1, tokens), generator=g)
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 1, text, config["text_embed_dim"]),
        prior_token_id=prior,
        prior_token_drop=torch.full_like(prior, drop, dtype=torch.bool),
        timestep=torch.tensor([799.0]),
        target_size=torch.tensor([[height * 8.0, width * 8.0]]),
        crop_coords=torch.zeros(1, 2),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("GlmImageTransformer2DModel", GLM_IMAGE, _GLM_IMAGE,
               {"cond": _glm_image, "uncond": lambda c, g: _glm_image(c, g, text=3, drop=True)}, anything=True,
               note="prior-token embeddings added before the split; odd glyph text lengths; the editing KV cache "
                    "is not in the cases"),
]

"""Stable Diffusion 3 / 3.5 (SD3Transformer2DModel): joint text + image attention, both streams split.

The latent enters as an image (B, C, H, W) and `pos_embed` patchifies it and adds absolute positional
embeddings for the whole image, so its output is split (each token keeps its own embedding); the text is
split after `context_embedder`. SD3.5's extra image-only attention (`attn2`) is self-attention over the
split image tokens. SD3's 333 text tokens (77 CLIP + 256 T5) do not divide: use the anything flags.
"""

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

SD3 = {
    "pos_embed": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "context_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_SD3 = dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=16, out_channels=4,
            pos_embed_max_size=16)


def _sd3(config, g, text=13, height=8, width=10):
    return dict(
        hidden_states=randn(g, 1, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, 1, text, config["joint_attention_dim"]),
        pooled_projections=randn(g, 1, config["pooled_projection_dim"]),
        timestep=randn(g, 1).abs() * 500, return_dict=False,
    )


ENTRIES = [
    ModelEntry("SD3Transformer2DModel", SD3, _SD3, {"sd3": _sd3, "sd3.5": _sd3},
               case_configs={"sd3.5": dict(dual_attention_layers=(0,), qk_norm="rms_norm")}, anything=True,
               note="odd text length (SD3: 333 tokens); SD3.5 dual attention and qk-norm"),
]

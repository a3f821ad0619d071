"""Kandinsky 5 (Kandinsky5Transformer3DModel): the video is split along its height, the text stays whole.

The model keeps the video as a (batch, frames, height, width, dim) grid until the blocks: `forward` computes
the 3-D rotary table from that grid's shape and the pipeline's per-axis positions `visual_rope_pos`, flattens
both, runs the blocks, and reshapes the tokens back to the grid's shape before the output layer. So the split
is along the height rows of the patch embedding's output (every rank holds whole rows of every frame; images
have one frame, so the frames cannot be split), together with the height positions (`visual_rope_pos[1]`): the
table, the flattening and the reshape then all see the local grid, and the output layer's result is gathered
along its height. Attention does not depend on the order of its keys, so the per-rank row blocks are exact.

The Qwen text runs through its own encoder blocks (self-attention over the whole text, replicated) and is
the replicated key set of the visual blocks' cross-attention: Kandinsky's processor passes its config for
every call, so both are marked LocalAttention(). Refused: `attention_type="nabla"`, whose sparse attention
builds a flex BlockMask from the pooled scores of all queries against all keys (a query x key mask).

Verification caveat: Kandinsky 5 zero-initialises its modulation layers, so with random weights every block's
gates are 0 and the forward comparison sees only the embeddings and the output layer; the backward check
compares the gradients of those modulation weights, which carry every block's attention output. The entry does
not redraw them (`redraw=("*modulation.out_layer.*",)` makes the outputs depend on every block, and the forward
check passes in every mode): diffusers' Kandinsky5AttnProcessor rounds the rotated queries and keys to bfloat16
(`apply_rotary` ends in `.to(torch.bfloat16)`), whose backward rounds their gradients to bfloat16 as well, so
once the attention reaches the output the query/key weight gradients differ from the one-process ones by
rounding flips of ~4e-3 per element (1e-4 to 3e-3 relative), far above the fp32 tolerance; the same flips appear
in one process when only the SDPA kernel changes.
"""

import torch

from ..catalogue import ModelEntry
from ..catalogue._inputs import randn
from ..plan import ContextParallelInput, ContextParallelOutput, LocalAttention, UnsupportedConfig

_ROWS = ContextParallelInput(split_dim=2, expected_dims=5, split_output=True)

KANDINSKY5 = {
    "": {"visual_rope_pos": [None, ContextParallelInput(split_dim=0, expected_dims=1), None]},
    "visual_embeddings": {0: _ROWS},
    "text_transformer_blocks.*.self_attention": LocalAttention(),
    "visual_transformer_blocks.*.cross_attention": LocalAttention(),
    "out_layer": ContextParallelOutput(gather_dim=2, expected_dims=5),
}

_REFUSED_K5 = (
    UnsupportedConfig("", "config.attention_type", ("nabla",),
                      "its sparse (nabla) attention builds a flex BlockMask from the pooled scores of all queries "
                      "against all keys, a query x key mask that cannot be split."),
)

_LATENT = 4
_K5 = dict(in_visual_dim=_LATENT, out_visual_dim=_LATENT, in_text_dim=32, in_text_dim2=24, time_dim=32,
           patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2,
           axes_dims=(4, 6, 6))
_K5_I2V = dict(visual_cond=True)


def _kandinsky5(config, g, frames=2, height=8, width=12, text=9, cond=False):
    # Latents are channels-last, (B, frames, height, width, C); I2V appends [first-frame latents, its mask].
    latents = randn(g, 1, frames, height, width, _LATENT)
    if cond:
        visual_cond = torch.zeros_like(latents)
        visual_cond[:, :1] = randn(g, 1, 1, height, width, _LATENT)
        mask = torch.zeros(1, frames, height, width, 1)
        mask[:, :1] = 1.0
        latents = torch.cat([latents, visual_cond, mask], dim=-1)
    return dict(
        hidden_states=latents,
        encoder_hidden_states=randn(g, 1, text, config["in_text_dim"]),
        timestep=torch.full((1,), 950.0),
        pooled_projections=randn(g, 1, config["in_text_dim2"]),
        visual_rope_pos=[torch.arange(frames), torch.arange(height // 2), torch.arange(width // 2)],
        text_rope_pos=torch.arange(text),
        scale_factor=(1, 2, 2),
        return_dict=False,
    )


# Kandinsky 6: the flattened video is split at the first fused block and gathered at the last one (see the
# module docstring); the audio is split from its embedding to its output layer.
_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=5)  # (seq, 1, head_dim / 2, 2, 2) rotation matrices

KANDINSKY6 = {
    "video_text_transformer_blocks.*.attn": LocalAttention(),
    "audio_text_transformer_blocks.*.attn": LocalAttention(),
    "visual_transformer_blocks.0": {"vis": _TOKENS},
    "visual_transformer_blocks.*": {"vis_rope": _TABLE},
    "visual_transformer_blocks.*.video_dec_block.cross_attention": LocalAttention(),
    "visual_transformer_blocks.*.audio_dec_block.cross_attention": LocalAttention(),
    # Output 1 (the audio) is already split and may be None (video only): only the video is gathered here.
    "visual_transformer_blocks.-1": [ContextParallelOutput(gather_dim=1, expected_dims=3)],
    "audio_embeddings": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "audio_rope_embeddings": {0: ContextParallelInput(split_dim=0, expected_dims=5, split_output=True)},
    "audio_out_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_K6_AUDIO = 6
# The released checkpoints' flags (ca_rope, cross_gates, fix_modulation, text padding) at tiny widths; the audio
# branch is narrower than the video one, as in the checkpoints.
_K6 = dict(in_visual_dim=_LATENT, out_visual_dim=_LATENT, in_text_dim=32, in_text_dim2=24, time_dim=32,
           patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6),
           visual_cond=True, in_audio_dim=_K6_AUDIO, out_audio_dim=_K6_AUDIO, model_dim_a=32, time_dim_a=32,
           ff_dim_a=64, axes_dims_a=(4, 6, 6), text_token_padding=True, ca_rope=True, cross_gates=True,
           fix_modulation=True, visual_token_type_num_embeddings=2)


def _kandinsky6(config, g, frames=2, height=8, width=10, text=9, valid=6, audio=7, image=False):
    """The TI2VA pipeline's call: channels-last video [latents, zero cond latents, cond mask], optional audio."""
    latents = randn(g, 1, frames, height, width, _LATENT)
    mask = torch.zeros(1, frames, height, width, 1)
    inputs = dict(
        encoder_hidden_states=randn(g, 1, text, config["in_text_dim"]),
        pooled_projections=randn(g, 1, config["in_text_dim2"]),
        timestep=torch.full((1,), 950.0),
        # The pipeline passes None when no prompt token is padding.
        encoder_attention_mask=torch.arange(text)[None] < valid if valid < text else None,
        return_dict=False,
    )
    if image:  # the reference frame appended as a masked tail frame at temporal position 0, token type 1
        latents = torch.cat([latents, randn(g, 1, 1, height, width, _LATENT)], dim=1)
        mask = torch.cat([mask, torch.ones(1, 1, height, width, 1)], dim=1)
        inputs["visual_token_type_ids"] = torch.tensor([[0] * frames + [1]])
        inputs["visual_rope_pos"] = (torch.cat([torch.arange(frames), torch.zeros(1, dtype=torch.long)]),
                                     torch.arange(height // 2), torch.arange(width // 2))
    inputs["hidden_states"] = torch.cat([latents, torch.zeros_like(latents), mask], dim=-1)
    if audio:
        inputs["audio_hidden_states"] = randn(g, 1, audio, config["in_audio_dim"])
    return inputs


ENTRIES = [
    ModelEntry("Kandinsky5Transformer3DModel", KANDINSKY5, _K5,
               {"t2v": _kandinsky5, "t2i": lambda c, g: _kandinsky5(c, g, frames=1, height=10),
                "i2v": lambda c, g: _kandinsky5(c, g, cond=True)},
               case_configs={"i2v": _K5_I2V}, anything=True, unsupported=_REFUSED_K5,
               note="split along the video's height rows (with visual_rope_pos[1]); text encoder blocks and "
                    "cross-attention local; T2I single frame, I2V first-frame condition; nabla attention refused"),
    ModelEntry("Kandinsky6Transformer3DModel", KANDINSKY6, _K6,
               {"t2va": _kandinsky6, "i2va": lambda c, g: _kandinsky6(c, g, image=True, audio=9, valid=9),
                "t2v": lambda c, g: _kandinsky6(c, g, audio=0, height=6)},
               anything=True,
               note="fused video + audio blocks: the flattened video split at the first block and gathered at the "
                    "last (visual_transformer_blocks.-1), the audio from its embedding to its output layer; text "
                    "branches and text cross-attention local; I2V tail frame, video-only T2V, padded text"),
]

UNSUPPORTED = {
    "Kandinsky6SRTransformer3DModel": (
        "every self-attention is NABLA sparse attention: the processor builds a flex BlockMask from the pooled "
        "scores of all queries against all keys plus a sliding-window mask over 8x8 token tiles, a query x key "
        "mask that cannot be split"
    ),
}

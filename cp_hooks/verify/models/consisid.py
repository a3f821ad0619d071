"""ConsisID (ConsisIDTransformer3DModel): CogVideoX-style joint [text, video] attention; video split, text
split only inside the attention.

The video tokens are split at the first block and the pipeline's rotary table (video tokens only) at the
model's input. The text cannot stay split between blocks as in CogVideoX: after the last block `forward`
concatenates [text, video], normalises and drops the first `text_seq_length` tokens, a plain int counted on
the whole text. So every block keeps the whole text, and only its attention sees a shard: `norm1`'s text
output is split and the attention's text output (output 1) gathered back. The attention processor finds the
text length from what it receives, so it works on [local text, local video]; the block's text feed-forward
and norms run on the whole text on every rank (226 tokens, beside thousands of video tokens).

The identity modules (`local_facial_extractor`, `perceiver_cross_attention`) compute their attention with
matmuls, not SDPA: the face tokens are replicated and each video token's query attends to them locally.
ConsisID checkpoints are CogVideoX 5B I2V (image latents concatenated along channels): 226 text tokens, odd
per rank at 4 ranks, hence the anything flags.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

CONSISID = {
    "": {"image_rotary_emb": [_ROPE, _ROPE]},
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    # norm1 returns (video, text, gate, text gate): the attention gets this rank's piece of the text ...
    "transformer_blocks.*.norm1": {1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    # ... and its (video, text) outputs: the text comes back whole for the residual and the feed-forward.
    "transformer_blocks.*.attn1": [None, ContextParallelOutput(gather_dim=1, expected_dims=3)],
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_LATENT = 4
_HEAD_DIM = 16  # the rotary table splits it 4 (time) + 6 (height) + 6 (width)
_INNER = 4 * _HEAD_DIM
_CONSISID = dict(
    num_attention_heads=4, attention_head_dim=_HEAD_DIM, in_channels=2 * _LATENT, out_channels=_LATENT,
    time_embed_dim=16, text_embed_dim=16, num_layers=2, patch_size=2, use_rotary_positional_embeddings=True,
    is_train_face=True, cross_attn_interval=2, cross_attn_dim_head=8, cross_attn_num_heads=2,
    LFE_id_dim=12, LFE_vit_dim=16, LFE_depth=2, LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=2,
    LFE_num_querie=4, LFE_output_dim=int(_INNER / 3 * 2), LFE_ff_mult=1, LFE_num_scale=2,
)


def _consisid(config, g, text=13, frames=2, height=8, width=12):
    batch = 2  # classifier-free guidance batch; the face embeddings stay batch 1 as in the pipeline
    tokens = frames * (height // 2) * (width // 2)
    angles = randn(g, tokens, config["attention_head_dim"])
    return dict(
        # [noisy latents, image latents (first frame, zeros after)] along channels, (B, F, C, H, W)
        hidden_states=randn(g, batch, frames, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        timestep=torch.tensor([500, 500]),
        image_rotary_emb=(angles.cos(), angles.sin()),
        id_cond=randn(g, 1, config["LFE_id_dim"]),
        id_vit_hidden=[randn(g, 1, 5, config["LFE_vit_dim"]) for _ in range(config["LFE_num_scale"])],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry("ConsisIDTransformer3DModel", CONSISID, _CONSISID, {"i2v": _consisid}, anything=True,
               note="video split; the text is split only inside each attention (forward drops it by its whole "
                    "length); face identity modules (local cross-attention to replicated face tokens)"),
]

"""Motif-Video (MotifVideoTransformer3DModel): joint video + text attention, video, text and image all split.

Every attention of the model is joint ([video, text] in the dual blocks and the single blocks) or runs over
the text keys (the optional text cross-attention), so the text is split like the video and the keys are
spread over the ranks. The text and the SigLIP image tokens (I2V) are split at the model's input, each on its
own, together with the text padding mask: `forward` projects them token by token, concatenates
[image, text] and builds the blocks' key-padding mask as [True for the video tokens it holds, ones for the
image tokens, the text mask], all from the local shards, which is exactly this rank's piece of every
sequence in the order the processors use. The cross-attention strips the image tokens off its keys by
`image_embed_seq_len`, which `forward` reads from the (local) image shard, so it stays consistent too; the
rest of the text is per-token work whose output the model drops. The video is split at the patch embedding
and the rotary tables (computed for the whole grid) with it. The decoder single blocks (the last
`num_decoder_layers`) attend over [decoder video, encoded video], both split, with no mask.

The SigLIP image token count (729) and padded text need not divide the degrees: anything flags.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)

MOTIF_VIDEO = {
    "": {
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
        "encoder_attention_mask": ContextParallelInput(split_dim=1, expected_dims=2),
        "image_embeds": ContextParallelInput(split_dim=1, expected_dims=3),
    },
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "rope": {0: _ROPE, 1: _ROPE},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_LATENT = 4
# One dual block, two single blocks of which the last is a decoder block; text cross-attention on in both kinds.
_MOTIF = dict(in_channels=2 * _LATENT + 1, out_channels=_LATENT, num_attention_heads=4, attention_head_dim=16,
              num_layers=1, num_single_layers=2, num_decoder_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
              text_embed_dim=32, rope_axes_dim=(4, 6, 6), enable_text_cross_attention_dual=True,
              enable_text_cross_attention_single=True)
_I2V = dict(image_embed_dim=24)


def _motif(config, g, text=9, valid=(9, 5), image_tokens=0, frames=2, height=8, width=12):
    batch = len(valid)  # the guider's conditional and unconditional passes, batched, with different lengths
    # The pipeline concatenates [noisy latents, first-frame condition latents, its mask] along channels.
    inputs = dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        timestep=torch.full((batch,), 900.0),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid)),  # the pipeline passes it as bool
        return_dict=False,
    )
    if image_tokens:
        inputs["image_embeds"] = randn(g, batch, image_tokens, config["image_embed_dim"])
    return inputs


ENTRIES = [
    ModelEntry("MotifVideoTransformer3DModel", MOTIF_VIDEO, _MOTIF,
               {"t2v": _motif, "i2v": lambda c, g: _motif(c, g, image_tokens=5)},
               case_configs={"i2v": _I2V}, anything=True,
               note="joint video + text attention with a padded text mask; text cross-attention; decoder single "
                    "blocks; I2V SigLIP tokens split apart from the text; odd text and image lengths"),
]

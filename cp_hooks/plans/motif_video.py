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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

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


PLANS = {
    "MotifVideoTransformer3DModel": PlanDeclaration(plan=MOTIF_VIDEO),
}

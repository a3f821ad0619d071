"""HiDream-I1 (HiDreamImageTransformer2DModel): image + T5 + Llama-3 streams, one rotary table over all of them.

`forward` patchifies the 4-D latents in a method (`patchify`, no module): image tokens, image position ids
and, for NON-SQUARE latents only, tokens padded to `max_seq` with a (B, max_seq) padding mask. The text is
the T5 stream plus one Llama-3 hidden layer per block (`encoder_hidden_states_llama3[k]`, the pipeline's
stacked (layers, B, L, D) tensor), each through its own per-token `caption_projection`. Then `txt_ids`
(zeros, as long as T5 + two Llama layers) are appended to the image ids and `pe_embedder` computes ONE
rotary table over [image, text]. Each double-stream block attends over [image, T5 + last Llama layer + its
own Llama layer] (`initial_encoder_hidden_states[:, :initial_len]` drops its own layer again afterwards);
each single-stream block over [image, T5, last Llama layer, its own Llama layer], with the padding mask
extended by ones for the text. The mask is no attention mask: the processor multiplies the image keys by
it, token by token. The feed-forward of both block kinds is a mixture of experts routed per token (top-2).

The plan:

- the image is split at `x_embedder` (tag "image"), every text stream at its `caption_projection` (the
  Llama list may be a tensor or a list, and the projections are per token). So the text is local before
  `forward` builds `txt_ids`, its attention concatenations and slices, and the ones of the mask: all of
  them have the local text lengths, and every rank holds [its image piece, its T5 piece, its Llama pieces];
- the position ids go into `pe_embedder` as [whole image, local text]: a segmented split
  `segments=("image", None)` keeps this rank's image rows and the (already local) text rows, so the table
  matches each block's local [image, text] concatenation row by row (the text rows are all position 0);
- the padding mask is split like the image in the double-stream blocks (it is exactly the image's length);
  the single-stream blocks receive [whole image mask, local text ones]: again `segments=("image", None)`;
- gathered at `final_layer`, before `unpatchify` (which also takes the first pH * pW of the max_seq tokens).

The MoE is exact on shards (per-token routing and weights; in training the gate's load-balancing loss is
computed but never used). In eval mode (the pipeline) it runs `moe_infer`, which is `@torch.no_grad`: the
routed experts and the gate would get no gradient, so the backward check would not see them. The tiny model
is therefore put in training mode, and the inference cases set the model's own `force_inference_output=True`
(in training mode it selects exactly the eval branches: `moe_infer`, no aux loss, the per-sample unpatchify),
while the "train" case keeps the default config: the training branches, with gradients through every expert.

Refused: batch groups (cfg_degree > 1), because the Llama stack has the batch in dim 1, not 0. Gradient
checkpointing works: the blocks it recomputes during the backward have their SDPA calls routed too
(tests/test_activation_checkpointing.py).
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

HIDREAM = {
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True, tag="image")},
    "caption_projection.*": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    # ids = [image ids (whole), txt_ids (zeros, already the local text length)], (B, S, 3)
    "pe_embedder": {"ids": ContextParallelInput(split_dim=1, expected_dims=3, segments=("image", None))},
    "double_stream_blocks.*": {"hidden_states_masks": ContextParallelInput(split_dim=1, expected_dims=2)},
    # [image mask (whole), ones for the local text]
    "single_stream_blocks.*": {
        "hidden_states_masks": ContextParallelInput(split_dim=1, expected_dims=2, segments=("image", None))
    },
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "HiDreamImageTransformer2DModel": PlanDeclaration(
        plan=HIDREAM,
        no_batch_split="its `encoder_hidden_states_llama3` is the stack of Llama hidden layers, (layers, batch, "
        "tokens, dim), whose leading dimension is the layer count, not the batch.",
    ),
}

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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

HIDREAM = {
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True, tag="image")},
    "caption_projection.*": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    # ids = [image ids (whole), txt_ids (zeros, already the local text length)], (B, S, 3)
    "pe_embedder": {"ids": ContextParallelInput(split_dim=1, expected_dims=3, segments=("image", None))},
    "double_stream_blocks.*": {"hidden_states_masks": ContextParallelInput(split_dim=1, expected_dims=2)},
    # [image mask (whole), ones for the local text]
    "single_stream_blocks.*": {"hidden_states_masks": ContextParallelInput(split_dim=1, expected_dims=2,
                                                                           segments=("image", None))},
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


# 1 double + 1 single block, 4 heads of 8 (head_dim = sum of the three rotary axes, as HiDream-I1's 128 = 64 +
# 32 + 32), MoE on (4 routed experts, top 2, and a shared one). max_seq = 10 * 10 / 2**2 = 25 padded tokens.
_HIDREAM = dict(patch_size=2, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
                num_attention_heads=4, caption_channels=[12, 16], text_emb_dim=8, num_routed_experts=4,
                num_activated_experts=2, axes_dims_rope=(4, 2, 2), max_resolution=(10, 10), llama_layers=[1, 2])
_INFERENCE = dict(force_inference_output=True)  # in training mode: the pipeline's (eval) branches, see above


def _hidream(config, g, height=6, width=6, t5=7, llama=5, llama_stack=3):
    # HiDreamImagePipeline with CFG: one call with the batch [negative, positive]; T5 and Llama prompts padded
    # to max_sequence_length (128 by default; any value, so lengths the ranks do not divide); the Llama input
    # is the stack of its hidden layers, (layers, B, L, D). Square latents: no padding; non-square: padded
    # to max_seq with a mask.
    batch = 2
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timesteps=torch.full((batch,), 750.0),
        encoder_hidden_states_t5=randn(g, batch, t5, config["caption_channels"][0]),
        encoder_hidden_states_llama3=randn(g, llama_stack, batch, llama, config["caption_channels"][1]),
        pooled_embeds=randn(g, batch, config["text_emb_dim"]),
        return_dict=False,
    )


def _train_mode(model, g):
    model.train()  # see the module docstring: the inference cases select the eval branches by config


ENTRIES = [
    ModelEntry("HiDreamImageTransformer2DModel", HIDREAM, _HIDREAM,
               {"t2i": _hidream, "non_square": lambda c, g: _hidream(c, g, height=8, width=10),
                "train": lambda c, g: _hidream(c, g, height=8, width=10)},
               case_configs={"t2i": _INFERENCE, "non_square": _INFERENCE}, anything=True, prepare=_train_mode,
               no_batch_split="its `encoder_hidden_states_llama3` is the stack of Llama hidden layers, (layers, "
                              "batch, tokens, dim), whose leading dimension is the layer count, not the batch.",
               note="image split at x_embedder, T5 and every Llama layer at their projections; one rotary table "
                    "over [image, text] and the padding mask (non-square) split by segments (\"image\", None); "
                    "top-2 MoE; CFG batch; training branches with gradients through the experts; refuses cfg_degree > 1 "
                    "(Llama stack batched in dim 1)"),
]

UNSUPPORTED = {}

"""Verification of the hidream family's plans (`cp_hooks.plans.hidream`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

# 1 double + 1 single block, 4 heads of 8 (head_dim = sum of the three rotary axes, as HiDream-I1's 128 = 64 +
# 32 + 32), MoE on (4 routed experts, top 2, and a shared one). max_seq = 10 * 10 / 2**2 = 25 padded tokens.
_HIDREAM = dict(
    patch_size=2,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=8,
    num_attention_heads=4,
    caption_channels=[12, 16],
    text_emb_dim=8,
    num_routed_experts=4,
    num_activated_experts=2,
    axes_dims_rope=(4, 2, 2),
    max_resolution=(10, 10),
    llama_layers=[1, 2],
)
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
    ModelEntry(
        "HiDreamImageTransformer2DModel",
        config=_HIDREAM,
        cases={
            "t2i": _hidream,
            "non_square": lambda c, g: _hidream(c, g, height=8, width=10),
            "train": lambda c, g: _hidream(c, g, height=8, width=10),
        },
        case_configs={"t2i": _INFERENCE, "non_square": _INFERENCE},
        anything=True,
        prepare=_train_mode,
        note="image split at x_embedder, T5 and every Llama layer at their projections; one rotary table "
        'over [image, text] and the padding mask (non-square) split by segments ("image", None); '
        "top-2 MoE; CFG batch; training branches with gradients through the experts; refuses "
        "cfg_degree > 1 (Llama stack batched in dim 1)",
    ),
]

UNSUPPORTED: dict[str, str] = {}

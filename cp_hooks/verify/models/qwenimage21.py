"""Verification of the qwenimage21 family's plans (`cp_hooks.plans.qwenimage21`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_CONFIG = dict(
    patch_size=1,
    in_channels=16,
    out_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    context_in_dim=24,
    mlp_ratio=2,
    axes_dims_rope=(4, 6, 6),
    causal_condition=True,
)

# Framing tokens of QwenImage21Pipeline's chat template after the system turn is dropped (only lengths matter):
# "<|im_start|>user\n", "<imageN>", "<|im_end|>\n<|im_start|>assistant\n".
_HEAD, _IMAGE_TAG, _TAIL = 3, 4, 5


def _vlm_image_slots(prompt: int, conditions) -> list[bool]:
    """True at a prompt's <|image_pad|> slots: [head, per image: tag, <|vision_start|>, a slot per 2 x 2 latent
    tokens, <|vision_end|>, the prompt, tail] (condition images come before the prompt text)."""
    slots = [False] * _HEAD
    for _, h, w in conditions:
        slots += [False] * (_IMAGE_TAG + 1) + [True] * (h * w // 4) + [False]
    return slots + [False] * (prompt + _TAIL)


def qwenimage21_inputs(config, g, prompts=(7, 4), conditions=(), target=(1, 4, 6), timestep=1.0):
    """QwenImage21Pipeline's call: per prompt the VLM embeddings right-padded with zeros (an int64 mask, dropped
    when nothing is padded), the image-slot mask with the target's slots appended, the packed latents
    [condition images (shared by the batch), target], `img_shapes` [conditions..., target] in latent tokens."""
    batch, channels = len(prompts), config["in_channels"]
    latents = [randn(g, 1, h * w, channels).expand(batch, -1, -1) for _, h, w in conditions]
    latents.append(randn(g, batch, target[1] * target[2], channels))
    slots = [_vlm_image_slots(p, conditions) for p in prompts]
    longest = max(len(s) for s in slots)
    embeds = torch.zeros(batch, longest, config["context_in_dim"])
    mask = torch.zeros(batch, longest, dtype=torch.long)
    image_slots = torch.zeros(batch, longest, dtype=torch.bool)
    for i, row in enumerate(slots):
        embeds[i, : len(row)] = randn(g, len(row), config["context_in_dim"])
        mask[i, : len(row)] = 1
        image_slots[i, : len(row)] = torch.tensor(row)
    target_slots = torch.ones(batch, target[1] * target[2] // 4, dtype=torch.bool)
    return dict(
        hidden_states=torch.cat(latents, 1),
        encoder_hidden_states=embeds,
        encoder_hidden_states_mask=None if bool(mask.all()) else mask,
        timestep=torch.full((batch,), float(timestep)),
        img_shapes=[[*conditions, target]] * batch,
        img_mask=torch.cat([image_slots, target_slots], 1),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "QwenImage21Transformer2DModel",
        config=_CONFIG,
        cases={
            "t2i": qwenimage21_inputs,
            "edit": lambda c, g: qwenimage21_inputs(
                c, g, prompts=(5, 2), conditions=((1, 4, 2), (1, 2, 6)), target=(1, 2, 6)
            ),
            "single": lambda c, g: qwenimage21_inputs(c, g, prompts=(9,), conditions=((1, 2, 6),), target=(1, 4, 2)),
        },
        anything=True,
        redraw=("*norm*.weight",),
        note="block-causal attention through a processor of the plan's own (ContextParallelProcessor): the "
        "mask built over the whole joint sequence from the model's segments; padded prompts (batch of "
        "2), two condition images of other sizes; the KV-cache steps in tests/test_qwenimage21_cache.py",
    ),
]

UNSUPPORTED: dict[str, str] = {}

"""Verification of the omnigen family's plans (`cp_hooks.plans.omnigen`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

# 4 heads of 8 (the released model: 32 of 96, as many key/value heads); the tokenizer's padding id (2, the
# collator's) is not the embedding's padding_idx, as in the released model (32000).
_OMNIGEN = dict(
    in_channels=4,
    patch_size=2,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=64,
    num_layers=2,
    vocab_size=48,
    pad_token_id=47,
    pos_embed_max_size=16,
    time_step_dim=32,
    rope_scaling=dict(short_factor=[1.0, 1.05, 1.1, 1.2], long_factor=[1.0, 1.5, 2.0, 3.0]),
)


def _prompt(g, vocab, chunks, images=()):
    """One `process_multi_modal_prompt` result: text chunks of the given lengths with an image placeholder
    (ids 0, one per 16 x 16 pixels) between consecutive chunks."""
    ids, spans = [], []
    for i, n in enumerate(chunks):
        ids += torch.randint(3, vocab - 1, (n,), generator=g).tolist()
        if i < len(images):
            h, w = images[i]
            spans.append([len(ids), len(ids) + h * w // 16 // 16])
            ids += [0] * (h * w // 16 // 16)
    pixels = [torch.zeros(3, h, w) for h, w in images] or None
    return {"input_ids": ids, "pixel_values": pixels, "image_sizes": spans or None}


def _omnigen(config, g, prompts, negative=6, images=None, height=48, width=80):
    """The inputs OmniGenPipeline gives the transformer: its collator's ids, mask and positions for the batch
    [prompts..., negative prompts..., (image-only prompts...)], the input images' latents in batch order, and
    the noisy latents repeated once per guidance branch.

    `prompts`: per prompt, its text chunk lengths (one more than its images); `images`: per prompt, the
    (height, width) in pixels of its input images (editing: then the image-guidance prompts
    "<img><|image_1|></img> ..." follow, 2 text tokens around each image).
    """
    from diffusers.pipelines.omnigen.processor_omnigen import OmniGenCollator

    vocab = config["vocab_size"]
    features = []
    for i, chunks in enumerate(prompts):
        own = images[i] if images else ()
        img_cfg = _prompt(g, vocab, [2] + [1] * (len(own) - 1) + [2], own) if own else None
        features.append((_prompt(g, vocab, chunks, own), _prompt(g, vocab, [negative]), img_cfg, [height, width]))
    data = OmniGenCollator(hidden_size=config["hidden_size"])(features)
    batch = data["input_ids"].shape[0]
    latents = randn(g, len(prompts), config["in_channels"], height // 8, width // 8)
    return dict(
        hidden_states=torch.cat([latents] * (batch // len(prompts))),
        timestep=torch.full((batch,), 0.7),
        input_ids=data["input_ids"],
        input_img_latents=[
            randn(g, 1, config["in_channels"], x.shape[-2] // 8, x.shape[-1] // 8) for x in data["input_pixel_values"]
        ],
        input_image_sizes=data["input_image_sizes"],
        attention_mask=data["attention_mask"],
        position_ids=data["position_ids"],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "OmniGenTransformer2DModel",
        config=_OMNIGEN,
        cases={
            # [prompt, negative]: the negative prompt shorter, left-padded; 9 + 1 + 15 = 25 tokens
            "t2i": lambda c, g: _omnigen(c, g, [[9]]),
            # two prompts of other lengths and a longer negative: [p1, p2, n, n], 11 + 1 + 6 = 18 tokens
            "prompts": lambda c, g: _omnigen(c, g, [[7], [5]], negative=11, height=32, width=48),
            # editing with two input images of other sizes: [prompt, negative, image-only prompt]
            "edit": lambda c, g: _omnigen(c, g, [[3, 2, 4]], images=[[(32, 48), (48, 32)]]),
        },
        anything=True,
        note="packed [condition, time token, image] split at the first layer with the rotary table; the "
        "collator's block-causal (B, S, S) mask left whole (a query x key mask over the whole "
        "sequence); gathered at `norm`, before forward keeps the image by an int from the end; CFG "
        "batch with a left-padded negative prompt, two prompts, editing with two input images",
    ),
]

UNSUPPORTED: dict[str, str] = {}

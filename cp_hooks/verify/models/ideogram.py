"""Verification of the ideogram family's plans (`cp_hooks.plans.ideogram`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_CONFIG = dict(
    in_channels=8,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    intermediate_size=48,
    adaln_dim=16,
    llm_features_dim=24,
    mrope_section=(4, 2, 2),
)

_PAD, _IMAGE, _TEXT = -1, 2, 3  # the pipeline's segment id of padding and the model's role indicators
_IMAGE_POSITION_OFFSET = 65536


def _ideogram4(config, g, text_lengths=(4, 7), max_text=9, grid=(3, 5), unconditional=False):
    # Ideogram4Pipeline._prepare_ids: [left padding, text, image] per prompt; the unconditional pass keeps the
    # image region of that layout (one segment, zero text features).
    batch, image = len(text_lengths), grid[0] * grid[1]
    h, w = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    image_pos = torch.stack([torch.zeros(image, dtype=torch.long), h.reshape(-1), w.reshape(-1)], 1)
    total = max_text + image
    position_ids = torch.zeros(batch, total, 3, dtype=torch.long)
    segment_ids = torch.full((batch, total), _PAD, dtype=torch.long)
    indicator = torch.zeros(batch, total, dtype=torch.long)
    for b, n in enumerate(text_lengths):
        start = max_text - n
        position_ids[b, start:max_text] = torch.arange(n)[:, None].expand(n, 3)
        position_ids[b, max_text:] = image_pos + _IMAGE_POSITION_OFFSET
        indicator[b, start:max_text], indicator[b, max_text:] = _TEXT, _IMAGE
        segment_ids[b, start:] = 1
    if unconditional:
        position_ids, segment_ids, indicator = (t[:, max_text:] for t in (position_ids, segment_ids, indicator))
        total = image
    latents = randn(g, batch, image, config["in_channels"])
    hidden = latents if unconditional else torch.cat([torch.zeros(batch, max_text, config["in_channels"]), latents], 1)
    features = (
        torch.zeros(batch, total, config["llm_features_dim"])
        if unconditional
        else randn(g, batch, total, config["llm_features_dim"])
    )
    return dict(
        hidden_states=hidden,
        timestep=torch.full((batch,), 0.3),
        encoder_hidden_states=features,
        position_ids=position_ids,
        segment_ids=segment_ids,
        indicator=indicator,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "Ideogram4Transformer2DModel",
        config=_CONFIG,
        cases={
            "cond": _ideogram4,
            "uncond": lambda c, g: _ideogram4(c, g, unconditional=True),
            "long_prompt": lambda c, g: _ideogram4(c, g, text_lengths=(11, 2), max_text=11, grid=(2, 3)),
        },
        anything=True,
        note="segment mask seg[q] == seg[k] built in forward over the whole packed [left-padded text, image] "
        "sequence (segment_ids left whole; each rank takes its rows, each key block its columns); "
        "prompts of different lengths; the unconditional image-only pass",
    ),
]

UNSUPPORTED: dict[str, str] = {}

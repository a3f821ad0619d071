"""Ideogram 4 (Ideogram4Transformer2DModel): one packed [left-padded text, image] sequence per sample.

Ideogram4Pipeline calls the model twice per step: the conditional pass over [padding, text, image] and the
unconditional pass over the image alone (a second instance, `unconditional_transformer`, of the same class).
Every input has one row per token; `forward` masks the text and image features by their role (`indicator`),
computes the (cos, sin) MRoPE table from `position_ids` in the `rotary_emb` module, and builds the attention
mask from `segment_ids` as `seg[q] == seg[k]` (B, 1, S, S): the padding (segment -1) attends only to itself,
the prompt and image only to themselves.

That mask varies along queries, so it is left whole: `segment_ids` is not split, `forward` builds the mask over
the whole sequence on every rank, and cp_hooks' attention takes the rows of each rank's queries and each key
block's columns (docs/architecture.md, "Masks"). The sequence is split once, at the first layer's input, which
keeps the whole order the mask is written in; the rotary table is split at its module's output, and the
output is gathered at `final_layer`. The conditioning (`adaln_input`, one row per sample) stays whole.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TABLE = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)  # (B, S, head_dim)

IDEOGRAM4 = {
    "rotary_emb": {0: _TABLE, 1: _TABLE},
    "layers.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "final_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_CONFIG = dict(in_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2, intermediate_size=48,
               adaln_dim=16, llm_features_dim=24, mrope_section=(4, 2, 2))

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
    features = torch.zeros(batch, total, config["llm_features_dim"]) if unconditional else randn(
        g, batch, total, config["llm_features_dim"])
    return dict(hidden_states=hidden, timestep=torch.full((batch,), 0.3), encoder_hidden_states=features,
                position_ids=position_ids, segment_ids=segment_ids, indicator=indicator, return_dict=False)


ENTRIES = [
    ModelEntry("Ideogram4Transformer2DModel", IDEOGRAM4, _CONFIG,
               {"cond": _ideogram4, "uncond": lambda c, g: _ideogram4(c, g, unconditional=True),
                "long_prompt": lambda c, g: _ideogram4(c, g, text_lengths=(11, 2), max_text=11, grid=(2, 3))},
               anything=True,
               note="segment mask seg[q] == seg[k] built in forward over the whole packed [left-padded text, image] "
                    "sequence (segment_ids left whole; each rank takes its rows, each key block its columns); "
                    "prompts of different lengths; the unconditional image-only pass"),
]

UNSUPPORTED = {}

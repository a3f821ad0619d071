"""Verification of the krea2 family's plans (`cp_hooks.plans.krea2`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, padding_mask, randn

_KREA2 = dict(
    in_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    timestep_embed_dim=32,
    text_hidden_dim=32,
    num_text_layers=3,
    text_num_attention_heads=4,
    text_num_key_value_heads=2,
    text_intermediate_size=64,
    num_layerwise_text_blocks=1,
    num_refiner_text_blocks=1,
    axes_dims_rope=(4, 6, 6),
)


def _krea2(config, g, text=9, prompts=(5, 3), suffix=2, height=3, width=5):
    batch = len(prompts)
    # [prompt | PAD | suffix]: the pipeline pads in the middle of the template
    mask = torch.cat(
        [padding_mask(batch, text - suffix, list(prompts)), torch.ones(batch, suffix, dtype=torch.bool)], 1
    )
    return dict(
        hidden_states=randn(g, batch, height * width, config["in_channels"]),
        encoder_hidden_states=randn(g, batch, text, config["num_text_layers"], config["text_hidden_dim"]),
        timestep=torch.full((batch,), 0.7),
        position_ids=torch.cat([torch.zeros(text, 3), grid_ids(height, width, lead=1)]),
        encoder_attention_mask=mask,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "Krea2Transformer2DModel",
        config=_KREA2,
        cases={"t2i": _krea2},
        anything=True,
        note="joint [text, image] sequence split at the first block and gathered at the last "
        "(transformer_blocks.-1); batch of 2 prompts padded in the middle of the template; "
        "grouped-query heads",
    ),
]

"""Verification of the prx family's plans (`cp_hooks.plans.prx`, where each plan's reasons are): tiny configs, the
input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_PRX = dict(
    in_channels=4, patch_size=2, context_in_dim=24, hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, axes_dim=[8, 8]
)
# PRX-7B (pixel space): a two-layer bottleneck patch projection and resolution-aware modulation.
_PIXEL = dict(in_channels=3, bottleneck_size=16, resolution_embeds=True)


def _prx(config, g, text=8, valid=(3, 8), height=8, width=12):
    # CFG batch [negative, positive]: the T5Gemma tokenizer pads to max_length, a bool mask marks the prompt.
    batch = len(valid)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        timestep=torch.full((batch,), 0.6),
        encoder_hidden_states=randn(g, batch, text, config["context_in_dim"]),
        attention_mask=padding_mask(batch, text, list(valid)),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "PRXTransformer2DModel",
        config=_PRX,
        cases={"t2i": _prx, "pixel": _prx},
        case_configs={"pixel": _PIXEL},
        redraw=("blocks.*.modulation.lin.*",),
        note="image queries over [text, image] keys, both split with the padded text mask (CFG batch); "
        "PRX-7B pixel-space bottleneck and resolution embedding",
    ),
]

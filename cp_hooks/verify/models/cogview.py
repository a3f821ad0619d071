"""Verification of the cogview family's plans (`cp_hooks.plans.cogview`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_COMMON = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    num_layers=1,
    attention_head_dim=8,
    num_attention_heads=4,
    text_embed_dim=16,
    time_embed_dim=16,
    condition_dim=8,
    pos_embed_max_size=16,
    sample_size=8,
)
_COGVIEW3PLUS = _COMMON
_COGVIEW4 = dict(_COMMON, rope_axes_dim=(16, 16))


def _cogview(config, g, text=16, height=8, width=12):
    # CFG batch (CogView3Plus) or one call per branch (CogView4); SDXL-style size conditions per sample.
    batch = 2
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], height, width),
        encoder_hidden_states=randn(g, batch, text, config["text_embed_dim"]),
        timestep=torch.full((batch,), 800.0),
        original_size=torch.tensor([[height * 8.0, width * 8.0]] * batch),
        target_size=torch.tensor([[height * 8.0, width * 8.0]] * batch),
        crop_coords=torch.zeros(batch, 2),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "CogView3PlusTransformer2DModel",
        config=_COGVIEW3PLUS,
        cases={"t2i": _cogview},
        note="[text, image] from one patch embedding, split at the first block",
    ),
    ModelEntry(
        "CogView4Transformer2DModel",
        config=_COGVIEW4,
        cases={"t2i": _cogview, "control": _cogview},
        case_configs={"control": dict(in_channels=8)},
        note="2-D rotary table split with the image; Control: latents concatenated along channels; not the "
        "optional attention_mask (a query x key mask, refused)",
    ),
]

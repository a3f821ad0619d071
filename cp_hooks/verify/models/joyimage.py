"""Verification of the joyimage family's plans (`cp_hooks.plans.joyimage`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_JOYIMAGE = dict(
    patch_size=[1, 2, 2],
    in_channels=4,
    hidden_size=48,
    num_attention_heads=4,
    text_dim=32,
    mlp_width_ratio=2.0,
    num_layers=2,
    rope_dim_list=[4, 4, 4],
)


def _joyimage(config, g, items=1, text=9, height=6, width=10):
    # JoyImageEditPipeline: latents (B, items, C, 1, H, W), [reference, noise] when editing; the conditional
    # and unconditional passes are separate calls of batch 1. 3 x 5 = 15 tokens per item (odd).
    return dict(
        hidden_states=randn(g, 1, items, config["in_channels"], 1, height, width),
        timestep=torch.full((1,), 750.0),
        encoder_hidden_states=randn(g, 1, text, config["text_dim"]),
        return_dict=False,
    )


def _joyimage_plus(config, g, shapes, text=9, text_lens=(6, 9)):
    # JoyImageEditPlusPipeline: one (B, max_patches, C, 1, 2, 2) tensor of patches per sample, [target, its
    # references], padded to the longest sample; shape_list gives each sample's (t, h, w) components. With
    # CFG the batch is [negative, positive], the shorter prompt's text padded (its mask 0 at the tail).
    patches = [sum(t * h * w for t, h, w in sample) for sample in shapes]
    hidden = randn(g, len(shapes), max(patches), config["in_channels"], *config["patch_size"])
    for i, n in enumerate(patches):
        hidden[i, n:] = 0  # the pipeline's padding
    mask = torch.zeros(len(shapes), text, dtype=torch.long)
    for i, n in enumerate(text_lens):
        mask[i, :n] = 1
    return dict(
        hidden_states=hidden,
        timestep=torch.full((len(shapes),), 750.0),
        encoder_hidden_states=randn(g, len(shapes), text, config["text_dim"]),
        encoder_hidden_states_mask=mask,
        shape_list=[list(sample) for sample in shapes],
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "JoyImageEditTransformer3DModel",
        config=_JOYIMAGE,
        cases={
            "t2i": _joyimage,
            "edit": lambda c, g: _joyimage(c, g, items=2, text=13),
            "mrope": lambda c, g: _joyimage(c, g, items=2, text=11),
        },
        case_configs={"mrope": dict(rope_type="mrope")},
        anything=True,
        note="image and text both split for the joint attention; every block splits its nested rotary "
        "tuple ((image cos, sin), (text cos, sin) or None); edit with a reference item; mrope text table",
    ),
    ModelEntry(
        "JoyImageEditPlusTransformer3DModel",
        config=_JOYIMAGE,
        cases={
            "t2i": lambda c, g: _joyimage_plus(c, g, [[(1, 3, 5)]] * 2),
            "edit": lambda c, g: _joyimage_plus(c, g, [[(1, 3, 5), (1, 2, 4)]] * 2, text=11, text_lens=(7, 11)),
            "prompts": lambda c, g: _joyimage_plus(
                c, g, [[(1, 3, 5), (1, 2, 4)], [(1, 3, 5)]], text=10, text_lens=(10, 8)
            ),
        },
        anything=True,
        note="[image, text] key mask (image padding + text padding) split segment by segment with the two "
        "streams; references of other sizes; samples with different patch counts padded; CFG batch",
    ),
]

UNSUPPORTED: dict[str, str] = {}

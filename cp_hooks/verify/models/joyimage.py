"""JoyImage Edit (served) and Edit Plus (refused): double-stream image + text transformers.

Both have one joint attention over [image, text] per block (no mask), so both streams are split, each with
its rotary table.

JoyImageEditTransformer3DModel: `forward` patchifies the (B, items, C, T, H, W) latents (the edit pipeline
passes [reference image, noise] as two items, text-to-image one item) into one image sequence, projects the
text, and computes the rotary tables of the whole grid in a plain method (`get_rotary_pos_embed`, no module
whose output a plan could split): a (S_img, D) cos / sin pair, and, with `rope_type="mrope"`, a (S_txt, D)
pair for the text whose positions continue after the image's (None otherwise). Every block receives them as
`image_rotary_emb=((image cos, image sin), (text cos, text sin) or None)`, so every block splits that nested
tuple (a None stays None), while the image and text streams are split once, at the first block. Splitting the
text at the model's input instead would compute the mrope text positions from the local length. The text
stream is dropped after the blocks; the image is gathered at `proj_out`, before the unpatchify reshape.
Image and text lengths are arbitrary (the prompt is not padded): anything flags.

JoyImageEditPlusTransformer3DModel packs the target and its reference images patch by patch into one
(B, max_patches, C, pt, ph, pw) sequence (samples with fewer patches are padded), and `forward` builds, per
sample, a flat (cos, sin) table (B, S_img, D) and one key mask for the joint attention by concatenating the
image-padding mask and the text mask, (B, 1, 1, S_img + S_txt) (JoyImageEditPlusPipeline always passes the
text mask). Each rank needs [its image part, its text part] of that mask: a segmented split, with the image
and text lengths recorded by the tagged splits of the two streams at the first block.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=2)  # (S, head_dim) cos or sin

JOYIMAGE_EDIT = {
    "double_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    # ((image cos, image sin), (text cos, text sin) or None), handed whole to every block
    "double_blocks.*": {"image_rotary_emb": ((_TABLE, _TABLE), (_TABLE, _TABLE))},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


JOYIMAGE_EDIT_PLUS = {
    "double_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="image"),
                        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="text")},
    "double_blocks.*": {
        "image_rotary_emb": (ContextParallelInput(split_dim=1, expected_dims=3),) * 2,  # (cos, sin), (B, S_img, D)
        "attention_mask": ContextParallelInput(split_dim=3, expected_dims=4, segments=("image", "text")),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_JOYIMAGE = dict(patch_size=[1, 2, 2], in_channels=4, hidden_size=48, num_attention_heads=4, text_dim=32,
                 mlp_width_ratio=2.0, num_layers=2, rope_dim_list=[4, 4, 4])


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
    ModelEntry("JoyImageEditTransformer3DModel", JOYIMAGE_EDIT, _JOYIMAGE,
               {"t2i": _joyimage, "edit": lambda c, g: _joyimage(c, g, items=2, text=13),
                "mrope": lambda c, g: _joyimage(c, g, items=2, text=11)},
               case_configs={"mrope": dict(rope_type="mrope")}, anything=True,
               note="image and text both split for the joint attention; every block splits its nested rotary "
                    "tuple ((image cos, sin), (text cos, sin) or None); edit with a reference item; mrope text table"),
    ModelEntry("JoyImageEditPlusTransformer3DModel", JOYIMAGE_EDIT_PLUS, _JOYIMAGE,
               {"t2i": lambda c, g: _joyimage_plus(c, g, [[(1, 3, 5)]] * 2),
                "edit": lambda c, g: _joyimage_plus(c, g, [[(1, 3, 5), (1, 2, 4)]] * 2, text=11, text_lens=(7, 11)),
                "prompts": lambda c, g: _joyimage_plus(c, g, [[(1, 3, 5), (1, 2, 4)], [(1, 3, 5)]], text=10,
                                                       text_lens=(10, 8))},
               anything=True,
               note="[image, text] key mask (image padding + text padding) split segment by segment with the two "
                    "streams; references of other sizes; samples with different patch counts padded; CFG batch"),
]

UNSUPPORTED = {}

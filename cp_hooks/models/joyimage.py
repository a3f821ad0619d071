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

JoyImageEditPlusTransformer3DModel's tables are a flat (cos, sin) pair (B, S, D) that a plan can split, but
`forward` builds one key mask for the joint attention by concatenating the image-padding mask and the text
mask, (B, 1, 1, S_img + S_txt), and JoyImageEditPlusPipeline always passes the text mask. Each rank needs
[its image part, its text part] of it, which no contiguous split of the concatenation gives.
"""

import torch

from ..catalogue import ModelEntry
from ..catalogue._inputs import randn
from ..plan import ContextParallelInput, ContextParallelOutput

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=2)  # (S, head_dim) cos or sin

JOYIMAGE_EDIT = {
    "double_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    # ((image cos, image sin), (text cos, text sin) or None), handed whole to every block
    "double_blocks.*": {"image_rotary_emb": ((_TABLE, _TABLE), (_TABLE, _TABLE))},
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


ENTRIES = [
    ModelEntry("JoyImageEditTransformer3DModel", JOYIMAGE_EDIT, _JOYIMAGE,
               {"t2i": _joyimage, "edit": lambda c, g: _joyimage(c, g, items=2, text=13),
                "mrope": lambda c, g: _joyimage(c, g, items=2, text=11)},
               case_configs={"mrope": dict(rope_type="mrope")}, anything=True,
               note="image and text both split for the joint attention; every block splits its nested rotary "
                    "tuple ((image cos, sin), (text cos, sin) or None); edit with a reference item; mrope text table"),
]

UNSUPPORTED = {
    "JoyImageEditPlusTransformer3DModel": (
        "forward concatenates the image-padding mask and the text mask into one (B, 1, 1, S_img + S_txt) key mask "
        "for the joint attention (the pipeline always passes the text mask); each rank needs [its image part, its "
        "text part], which no contiguous split gives (needs: a ContextParallelInput that splits a concatenation of "
        "segments piece by piece, e.g. segment lengths (S_img, S_txt) read from the split tensors)"
    ),
}

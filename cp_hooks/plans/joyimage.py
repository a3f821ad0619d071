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

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=2)  # (S, head_dim) cos or sin

JOYIMAGE_EDIT = {
    "double_blocks.0": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS},
    # ((image cos, image sin), (text cos, text sin) or None), handed whole to every block
    "double_blocks.*": {"image_rotary_emb": ((_TABLE, _TABLE), (_TABLE, _TABLE))},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


JOYIMAGE_EDIT_PLUS = {
    "double_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="image"),
        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="text"),
    },
    "double_blocks.*": {
        "image_rotary_emb": (ContextParallelInput(split_dim=1, expected_dims=3),) * 2,  # (cos, sin), (B, S_img, D)
        "attention_mask": ContextParallelInput(split_dim=3, expected_dims=4, segments=("image", "text")),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "JoyImageEditTransformer3DModel": PlanDeclaration(plan=JOYIMAGE_EDIT),
    "JoyImageEditPlusTransformer3DModel": PlanDeclaration(plan=JOYIMAGE_EDIT_PLUS),
}

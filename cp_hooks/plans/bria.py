"""Bria family (Bria 3.x, FIBO, FIBO 2): joint text + image attention.

Bria (BriaTransformer2DModel) is Flux.1 without pooled and guidance embeddings: the dual-stream processor
concatenates [text, image] queries, keys and values, the single-stream blocks concatenate the two streams,
and `forward` computes the rotary tables from `cat(txt_ids, img_ids)`, so the ids are split exactly like their
tokens. Its pipeline passes them batched, (B, S, 3) (the model reads row 0), so they are split along dim 1.
The text is zero-padded to `max_sequence_length` (128) without a mask; classifier-free guidance runs the
negative and the positive prompt as one batch of 2. ControlNet residuals (not used by any Bria pipeline)
are not split: passing them fails on a shape mismatch rather than computing a wrong result.

FIBO (BriaFiboTransformer2DModel) adds one projected text-encoder layer per block, concatenated to the text
stream's features before every block: each projection's input is split with the text. Its pipelines pass
(S, 3) ids, and the edit pipeline appends the reference images' tokens (and ids) to the image stream. With
classifier-free guidance and a negative prompt of another length, the pipelines pass a key-padding mask in
`joint_attention_kwargs` over the *joint* [text, image] sequence; its text and image parts would have to be
split separately (one tensor holding both streams), which no plan can express, so that mask is not served:
the attention refuses a mask whose length is not the local key length, with an error. Verified without
it: guidance scale 1, or prompts of one length. The text is the prompt's own token count: anything flags.

FIBO 2 (BriaFibo2Transformer2DModel) is a Z-Image-style single stream: `forward` patchifies the 4-D latents
(with the edit images' latents), runs a noise refiner over them, squeezes the text into gist tokens with a
Perceiver, and runs the main blocks over [gist, image, context] (gist last when a batch pads it), with rotary
tables from a plain object (not a module), a per-token noise mask and the joint key-padding mask all built whole
in `forward`, and after the last block slices the image tokens out at absolute offsets. So each of the two
block stacks is split whole: its stream at the input of its first block (`noise_refiner.0`, `layers.0`) and
gathered at the output of its last (`noise_refiner.-1`, before the gist is concatenated; `layers.-1`, before
the slice), and every block splits its copies of the rotary table (1, S, D/2), the key mask and the noise mask
(both (B, S), in the stream's order). The Perceiver (cross- and self-attention over the whole text and gist)
runs locally, before the split. The injection blocks' cross-attention to the whole text goes through the same
processor, which passes its parallel config for every call, and only those blocks have it, so it cannot be
marked local by name: instead each block's text bundle and text mask are split, and that cross-attention runs
context-parallel (every rank's image queries against the text keys of all ranks). Its gate
(`cross_attn_gate`) starts at zero, which would hide it: the entry redraws it. The pipeline runs one prompt per
pass (masks only for a batch of prompts); text lengths follow the prompt: anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)


def _joint_plan(ids_dim: int) -> dict:
    ids = ContextParallelInput(split_dim=ids_dim - 2, expected_dims=ids_dim)
    return {
        "": {"hidden_states": _TOKENS, "encoder_hidden_states": _TOKENS, "img_ids": ids, "txt_ids": ids},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


BRIA = _joint_plan(ids_dim=3)
BRIA_FIBO = {**_joint_plan(ids_dim=2), "caption_projection.*": {"caption": _TOKENS}}


def _whole_blocks(blocks: str, text: bool) -> dict:
    """Split the stream at the first of `blocks`, gather it at the last, and split in every block the per-token
    inputs that `forward` passes whole (rotary table, key mask, noise mask; an injection block's text and mask)."""
    per_block = {"freqs_cis": _TOKENS, "attn_mask": _MASK, "noise_mask": _MASK}
    if text:  # the injection blocks' text (None elsewhere): keys of their cross-attention, split with their mask
        per_block.update(encoder_hidden_states=_TOKENS, encoder_attention_mask=_MASK)
    return {
        f"{blocks}.0": {"x": _TOKENS},
        f"{blocks}.*": per_block,
        f"{blocks}.-1": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


_MASK = ContextParallelInput(split_dim=1, expected_dims=2)

BRIA_FIBO2 = {
    "perceiver": LocalAttention(),
    **_whole_blocks("noise_refiner", text=False),
    **_whole_blocks("layers", text=True),
}


PLANS = {
    "BriaTransformer2DModel": PlanDeclaration(plan=BRIA),
    "BriaFiboTransformer2DModel": PlanDeclaration(plan=BRIA_FIBO),
    "BriaFibo2Transformer2DModel": PlanDeclaration(plan=BRIA_FIBO2),
}

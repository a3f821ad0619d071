"""LongCat-Audio-DiT (LongCatAudioDiTTransformer): audio-latent attention and feed-forward split inside each block.

`forward` keeps a long skip (`residual = hidden_states.clone()`, added after the blocks) and computes the audio
rotary table from `hidden_states.shape[1]` with the same module that computes the text's, so the sequence can
neither be split before the blocks (the table would restart at 0 on every rank) nor between them (the skip
is whole). The blocks therefore run whole and the work inside them is split, as for Helios: every block splits
its copies of the audio rotary table and the audio mask (the processors use the mask both as the keys' padding
mask and to zero padded query rows, so it must follow the tokens), the self-attention's tokens, the
cross-attention's queries (the split output of `cross_attn_norm`; the text, its ConvNeXt refiner, its mask and
its rotary table stay whole, and the processor passes its config for every call, so `cross_attn` is marked
LocalAttention()) and the feed-forward; each is gathered right after its output projection.

A fresh model zero-initialises its AdaLN projection, `norm_out` and `proj_out`, so its output is exactly zero
and no gradient reaches the blocks: the entry redraws those weights (`redraw`), else the check would prove
nothing. The pipeline's audio length follows the duration (any integer): anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

LONGCAT_AUDIO = {
    "blocks.*": {"mask": ContextParallelInput(split_dim=1, expected_dims=2), "rope": [_ROPE, _ROPE]},
    "blocks.*.self_attn": {"hidden_states": _TOKENS},
    "blocks.*.self_attn.to_out.0": _GATHER,
    "blocks.*.cross_attn_norm": {0: ContextParallelInput(1, 3, split_output=True)},
    "blocks.*.cross_attn": LocalAttention(),
    "blocks.*.cross_attn.to_out.0": _GATHER,
    "blocks.*.ffn": {"hidden_states": _TOKENS},
    "blocks.*.ffn.ff.3": _GATHER,
}


PLANS = {
    "LongCatAudioDiTTransformer": PlanDeclaration(plan=LONGCAT_AUDIO),
}

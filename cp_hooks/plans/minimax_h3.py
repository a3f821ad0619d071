"""MiniMax-H3 (MiniMaxH3Transformer3DModel): one packed [text, video, audio] sequence, split for the blocks.

`forward` scatters the refined text, video and audio rows into the packed sequence by their index tensors
and computes the rotary table (S, D) from the packed (t, h, w) positions; the sequence is split at the
first block with the table, and every block splits its own copy of the per-row AdaLN indices (it reads them
from `forward`, whole), as does `norm_out` with its per-row timestep indices. Both heads run on the split
rows and are gathered before `forward` selects each modality's rows. The text refiner runs on the whole
text before packing; its attention is marked local (no communication for replicated text).

This is diffusers' `_cp_plan` plus that marking. The packed length is whatever the request holds (no
padding): use the anything flags.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_ROPE = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

MINIMAX_H3 = {
    "rope": {0: _ROPE, 1: _ROPE},
    "token_refiner.refiner_blocks.*.attn": LocalAttention(),
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*": {"adaln_indices": ContextParallelInput(split_dim=0, expected_dims=1)},
    "norm_out": {"timestep_indices": ContextParallelInput(split_dim=0, expected_dims=1)},
    "proj_out": _GATHER,
    "audio_proj_out": _GATHER,
}


PLANS = {
    "MiniMaxH3Transformer3DModel": PlanDeclaration(
        plan=MINIMAX_H3,
        no_batch_split="its `timestep` holds the distinct noise levels of the packed rows, not one per sample, so its "
        "leading dimension says nothing about the batch.",
    ),
}

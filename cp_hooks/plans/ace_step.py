"""ACE-Step 1.5 (AceStepTransformer1DModel): audio tokens split; the self-attention itself runs whole.

The sequence is the patchified audio latents (`proj_in_conv`, a stride-`patch_size` convolution over
[context latents, noisy latents]); it is split at the first layer and gathered at `proj_out_conv` (a transposed
convolution with kernel = stride, one output patch per token), before `forward` trims the padding by length.
Every layer's modulation is per sample, and its cross-attention reads the replicated condition-encoder output
(the processor passes its config for every call, so the layers are marked LocalAttention()).

The self-attention alternates between sliding-window layers (a (1, 1, S, S) banded mask |i - j| <= 128 that
`forward` builds for the whole sequence) and full layers. A banded mask varies along queries, which neither
Ulysses nor the ring can take from a shard, and a plan cannot tell the two kinds of layer apart (`layer_types`
is config). So in every layer the queries, keys and values are projected and normalised on the shards,
gathered (`norm_q`, `norm_k`, `to_v`), rotated with the whole rotary table and attended locally on every
rank (exact for both kinds of layer), and the attention output is split again at `to_out.0`. Everything else
(projections, cross-attention, MLP, output) runs on the shards. The latent length follows the duration: anything.
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)

ACE_STEP = {
    "layers.0": {"hidden_states": _TOKENS},
    "layers.*": LocalAttention(),
    "layers.*.self_attn.norm_q": ContextParallelOutput(gather_dim=1, expected_dims=4),
    "layers.*.self_attn.norm_k": ContextParallelOutput(gather_dim=1, expected_dims=4),
    "layers.*.self_attn.to_v": ContextParallelOutput(gather_dim=1, expected_dims=3),
    "layers.*.self_attn.to_out.0": {"input": _TOKENS},
    "proj_out_conv": ContextParallelOutput(gather_dim=2, expected_dims=3),
}


PLANS = {
    "AceStepTransformer1DModel": PlanDeclaration(plan=ACE_STEP),
}

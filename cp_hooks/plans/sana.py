"""Sana family: Sana, Sana-Video and Sana-WM served with only their text cross-attention split; the Sana-WM
refiner refused.

Sana-Video (SanaVideoTransformer3DModel) mixes the video tokens in two places that no split can follow: its
self-attention is ReLU linear attention (global sums over all keys computed with matmuls, neither SDPA nor
`dispatch_attention_fn`, so nothing routes them) and its feed-forward (GLUMBTempConv) is a 3x3 spatial and a
3-tap temporal convolution, run after the block reshapes its tokens to (frames, height, width) with the
*full* grid sizes. A gather before each and a split after cannot be placed either: the reshape and the
residual around the feed-forward are plain code in the block, and an image-to-video timestep is one per
token, so its modulation must be split for the residual and whole for the convolution at the same time.

What runs in parallel is the text cross-attention (`attn2`): the blocks run whole, its query projection's
output is split, the attention over the replicated text runs locally (its processor passes its parallel
config for every call: LocalAttention()) and its output projection is gathered. That is exact for every
config and pipeline call (per-token I2V timesteps included, as the blocks never see a shard), but only the
cross-attention's share of the work is divided. Latent grids need not divide the degrees: anything flags.

Sana (SanaTransformer2DModel) has the same block: ReLU linear self-attention and a GLUMBConv feed-forward
whose 3x3 depthwise convolution runs on the tokens reshaped to the *full* (height, width), so the same
cross-attention-only plan serves it: self-attention and feed-forward run whole on every rank, the T5/Gemma
cross-attention (its processor calls SDPA directly: LocalAttention()) is split by its queries. Sana-Sprint
(guidance embedding, QK norm) and ControlNet residuals (added to the whole blocks' output) change nothing.

Sana-WM (SanaWMTransformer3DModel) is a camera-controlled video model whose blocks mix the video tokens
everywhere but in the text cross-attention: a bidirectional gated-delta-rule (GDN) linear attention (chunked
recurrences over frames) or, every `softmax_every_n`-th block, a softmax attention, each with a UCPE camera
branch (per-ray transforms of the whole grid), and a GLUMBConvTemp feed-forward (spatial and temporal
convolutions on the full grid). So again only the cross-attention (`cross_attn`) is split: its `q_linear`
output is split, the attention over the replicated Gemma text runs locally (its processor passes its parallel
config for every call: LocalAttention()) and its `proj` is gathered. The softmax blocks call
`F.scaled_dot_product_attention` directly on the whole sequence, and cp_hooks routes every SDPA call of an
enabled model as context-parallel: so every block's self-attention (`attn`) is marked LocalAttention() (the
GDN ones call no SDPA; marking them too keeps the plan independent of `softmax_every_n`). Only the
cross-attention's share of the work is divided.

The catalogue's tiny Sana-WM has GDN blocks only. The softmax blocks cast fp32 queries, keys and values to
bfloat16 before SDPA (in every dtype), and under cp_hooks' gradient convention each rank back-propagates its
*partial* gradient through the whole blocks upstream of a split (`cp_hooks.forward.sharding`): rounding each rank's part
to bfloat16 separately leaves the summed gradients ~1e-3 from the single-process ones, beyond the fp32
tolerance, although the forward is exact (`python -m cp_hooks check SanaWMTransformer3DModel --config
'{"softmax_every_n": 2}'` without `--backward` passes with a difference of 0).
"""

from __future__ import annotations

from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention, PlanDeclaration

_QUERIES = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

# Sana and Sana-Video: only the text cross-attention's queries are split (see the module docstring).
SANA_VIDEO = {
    "transformer_blocks.*.attn2": LocalAttention(),
    "transformer_blocks.*.attn2.to_q": {0: _QUERIES},
    "transformer_blocks.*.attn2.to_out.0": _GATHER,
}
SANA = SANA_VIDEO

# Sana-WM: the same for its `cross_attn`; its self-attention (softmax blocks call SDPA directly) runs whole.
SANA_WM = {
    "blocks.*.attn": LocalAttention(),
    "blocks.*.cross_attn": LocalAttention(),
    "blocks.*.cross_attn.q_linear": {0: _QUERIES},
    "blocks.*.cross_attn.proj": _GATHER,
}


PLANS = {
    "SanaTransformer2DModel": PlanDeclaration(plan=SANA),
    "SanaVideoTransformer3DModel": PlanDeclaration(plan=SANA_VIDEO),
    "SanaWMTransformer3DModel": PlanDeclaration(plan=SANA_WM),
}

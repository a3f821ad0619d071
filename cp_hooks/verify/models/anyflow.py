"""AnyFlow (AnyFlowTransformer3DModel served; AnyFlowFARTransformer3DModel refused, see the reason below).

AnyFlowTransformer3DModel is the Wan 2.1 backbone with a dual-timestep embedding (source `t`, target `r`), one
timestep per latent frame, (B, F). The video tokens are split at the first block (`blocks.0`), after the patch
embedding has flattened the (frames, height, width) grid into one sequence.

Per-token conditioning: `condition_embedder` expands the per-frame timestep embedding to every token of its
frame (`repeat_interleave` by the tokens per frame), returning a (B, S, D) embedding (the output norm's
shift and scale) and a (B, S, 6 * D) projection (every block's modulation). Both are split at its output, with
the tokens; the output norm, its modulation and `proj_out` are then per token, so the gather is at
`proj_out`, before the unpatchify reshape. The video-to-video pipeline gives the conditioning frames timestep
0, so the rows differ along the sequence and must stay aligned with their tokens.

Rotary embedding: `rope` returns a dict, `{"query": table, "key": table}` (the same (1, 1, S, D / 2) complex
table twice) for the whole grid, handed to every block. It is split in every block's input with a dict spec
keyed like the value (split dim 2). (An output-index spec on `rope` itself cannot be used: a module whose
whole output is a dict is not indexed by the split hook.)

The text cross-attention (`attn2`) attends to the replicated UMT5 text (and I2V image tokens), but its
processor passes its parallel config for every call, so it is marked LocalAttention().
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_PER_TOKEN = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
_TABLE = ContextParallelInput(split_dim=2, expected_dims=4)  # (1, 1, S, head_dim / 2) complex

ANYFLOW = {
    "condition_embedder": {0: _PER_TOKEN, 1: _PER_TOKEN},
    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "blocks.*": {"rotary_emb": {"query": _TABLE, "key": _TABLE}},
    "blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


_ANYFLOW = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32)
_I2V = dict(image_dim=32)


def _anyflow(config, g, frames=3, height=6, width=10, text=12, context=0, image=0):
    # AnyFlowPipeline: latents (B, F, C, H, W); CFG batch [negative, positive]; per-frame timesteps t and r,
    # with t = 0 on the `context` conditioning frames (video-to-video). 3 x 3 x 5 = 45 tokens (odd).
    batch = 2
    timestep = torch.full((batch, frames), 800.0)
    timestep[:, :context] = 0.0
    inputs = dict(
        hidden_states=randn(g, batch, frames, config["in_channels"], height, width),
        timestep=timestep,
        r_timestep=torch.full((batch, frames), 600.0),
        encoder_hidden_states=randn(g, batch, text, config["text_dim"]),
        return_dict=False,
    )
    if image:
        inputs["encoder_hidden_states_image"] = randn(g, batch, image, config["image_dim"])
    return inputs


ENTRIES = [
    ModelEntry("AnyFlowTransformer3DModel", ANYFLOW, _ANYFLOW,
               {"t2v": _anyflow, "v2v": lambda c, g: _anyflow(c, g, context=1),
                "i2v": lambda c, g: _anyflow(c, g, image=5)},
               case_configs={"i2v": _I2V}, anything=True,
               note="per-frame timesteps expanded to tokens, split at the condition embedder's output; rotary dict "
                    "{query, key} split with a dict spec in every block; video-to-video (t = 0 context frames); "
                    "cross-attention marked LocalAttention()"),
]

UNSUPPORTED = {
    "AnyFlowFARTransformer3DModel": (
        "its causal processor attends through a flex BlockMask that is block-causal over frame chunks (a query x key "
        "mask that varies along the queries), pads the sequence it receives to a multiple of 128, and writes / reads "
        "its KV cache by plain int token counts from the start of the whole sequence (num_compressed_tokens, "
        "num_full_tokens)"
    ),
}

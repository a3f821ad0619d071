"""Verification of the anyflow family's plans (`cp_hooks.plans.anyflow`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_ANYFLOW = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    rope_max_seq_len=32,
)
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
    ModelEntry(
        "AnyFlowTransformer3DModel",
        config=_ANYFLOW,
        cases={
            "t2v": _anyflow,
            "v2v": lambda c, g: _anyflow(c, g, context=1),
            "i2v": lambda c, g: _anyflow(c, g, image=5),
        },
        case_configs={"i2v": _I2V},
        anything=True,
        note="per-frame timesteps expanded to tokens, split at the condition embedder's output; rotary dict "
        "{query, key} split with a dict spec in every block; video-to-video (t = 0 context frames); "
        "cross-attention marked LocalAttention()",
    ),
]

UNSUPPORTED = {
    "AnyFlowFARTransformer3DModel": (
        "its causal processor attends through a flex BlockMask that is block-causal over frame chunks (a query x key "
        "mask that varies along the queries), pads the sequence it receives to a multiple of 128, and writes / reads "
        "its KV cache by plain int token counts from the start of the whole sequence (num_compressed_tokens, "
        "num_full_tokens)"
    ),
}

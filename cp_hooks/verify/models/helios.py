"""Helios (HeliosTransformer3DModel): attention and feed-forward split inside every block, as diffusers does.

The sequence is [long, mid, short history tokens, current chunk], and each block finds the current chunk by
`original_context_length`, a plain int from `forward` (only the current chunk does the text
cross-attention, "guidance_cross_attn"). That int describes the whole sequence, so the blocks themselves
run whole; what is split is the work inside them: the self-attention (queries, keys and the rotary table),
the text cross-attention (its queries; the text is replicated and the processor already runs it locally)
and the feed-forward, each gathered right after its output projection.

This is diffusers' `_cp_plan` with wildcards: diffusers names the gathers `blocks.0..39` (the 14B model's
40 layers), which does not fit other depths, and cp_hooks refuses missing names. Refused (not covered):
`is_amplify_history=True`, whose processor finds the history length from its (split) input.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, UnsupportedConfig

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)

HELIOS = {
    "blocks.*.attn1": {"hidden_states": _TOKENS, "rotary_emb": _TOKENS},
    "blocks.*.attn2": {"hidden_states": _TOKENS},
    "blocks.*.ffn": {"hidden_states": _TOKENS},
    "blocks.*.attn1.to_out.1": _GATHER,
    "blocks.*.attn2.to_out.1": _GATHER,
    "blocks.*.ffn.net.2": _GATHER,
}


_REFUSED = (
    UnsupportedConfig("blocks.*.attn1", "is_amplify_history", (True,),
                      "its self-attention scales the keys of the history tokens, whose count it takes as the length "
                      "of the (split) sequence it receives minus the current chunk's whole length."),
)

_HELIOS = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=12, in_channels=4, out_channels=4,
               text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_dim=(4, 4, 4))


def _helios(config, g, frames=2, height=16, width=8, text=9, history=(8, 2, 1)):
    channels = config["in_channels"]
    inputs = dict(
        hidden_states=randn(g, 1, channels, frames, height, width),
        timestep=torch.full((1,), 700.0),
        encoder_hidden_states=randn(g, 1, text, config["text_dim"]),
        return_dict=False,
    )
    if history:
        long, mid, short = history
        indices = torch.arange(1 + long + mid + short + frames)
        prefix, i_long, i_mid, i_short, i_current = indices.split([1, long, mid, short, frames])
        inputs.update(
            indices_hidden_states=i_current[None],
            indices_latents_history_short=torch.cat([prefix, i_short])[None],
            indices_latents_history_mid=i_mid[None],
            indices_latents_history_long=i_long[None],
            latents_history_short=randn(g, 1, channels, 1 + short, height, width),
            latents_history_mid=randn(g, 1, channels, mid, height, width),
            latents_history_long=randn(g, 1, channels, long, height, width),
        )
    return inputs


ENTRIES = [
    ModelEntry("HeliosTransformer3DModel", HELIOS, _HELIOS,
               {"t2v": lambda c, g: _helios(c, g, history=None), "history": _helios},
               unsupported=_REFUSED,
               note="long / mid / short history latents before the current chunk; attention and feed-forward "
                    "split inside each block (diffusers' plan with wildcards); is_amplify_history=True refused"),
]

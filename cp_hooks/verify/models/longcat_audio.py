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

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

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


_LONGCAT = dict(dit_dim=32, dit_depth=2, dit_heads=4, dit_text_dim=16, latent_dim=8, ff_mult=2.0)


def _longcat(config, g, length=13, text=7, valid=(7, 4)):
    batch = len(valid)  # a batch of prompts with different text lengths (CFG runs a second, separate call)
    return dict(
        hidden_states=randn(g, batch, length, config["latent_dim"]),
        encoder_hidden_states=randn(g, batch, text, config["dit_text_dim"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid)),
        timestep=torch.full((batch,), 0.4),
        attention_mask=padding_mask(batch, length, [length] * batch),  # the pipeline's duration mask
        latent_cond=torch.zeros(batch, length, config["latent_dim"]),  # text-to-audio: zero latent condition
        return_dict=False,
    )


def _longcat_padded(config, g):
    inputs = _longcat(config, g)
    inputs["attention_mask"] = padding_mask(2, 13, [13, 9])  # audio of different lengths in one batch
    inputs["latent_cond"] = randn(g, 2, 13, config["latent_dim"])
    return inputs


_REDRAW = ("adaln_global_mlp.*", "blocks.*.adaln_mlp.*", "norm_out.*", "proj_out.*")

ENTRIES = [
    ModelEntry("LongCatAudioDiTTransformer", LONGCAT_AUDIO, _LONGCAT,
               {"t2a": _longcat, "padded": _longcat_padded}, anything=True, redraw=_REDRAW,
               note="blocks run whole (long skip, shared rotary module): self-attention, cross-attention and "
                    "feed-forward split inside each block; padded audio mask; zero-initialised output redrawn"),
]

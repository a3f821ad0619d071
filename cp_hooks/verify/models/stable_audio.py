"""Stable Audio (StableAudioDiTModel) and Stable Audio 3 (StableAudio3DiTModel): audio-latent self-attention split.

Stable Audio 1: `forward` prepends one global (duration + timestep) token to the audio tokens, so the sequence
is [global, audio]; it is split at the first block and gathered at `proj_out`, before `forward` drops the global
token. The pipeline passes the rotary table for that whole sequence (latent length + 1, partial rotary over half
of each head): it is split with the tokens at the model's input. The processor calls SDPA directly, so the
cross-attention over the replicated T5 text + duration tokens (`attn2`) is marked LocalAttention(). The
pipeline passes no masks (it zeroes padded text instead). 1024 latents + 1 global token: anything flags.

Stable Audio 3: `forward` prepends `num_memory_tokens` learned tokens and removes them after the blocks by a
plain int (`x[:, num_memory_tokens:]` before `proj_out`, and the inpainting `local_add_cond` is added inside each
block to `hidden_states[:, num_memory_tokens:]`). Those ints describe the whole sequence, so the blocks run
whole and the work inside them is split, as for Helios: the self-attention (tokens and the rotary table, which
`forward` computes for the whole sequence; the processor takes its last `seq_len` rows, i.e. all of a split
table), the cross-attention (its queries, from the split output of `cross_attend_norm`; the context is
replicated and its processor passes its config for every call, so it is marked LocalAttention()) and the
feed-forward, each gathered right after its output projection. The text padding mask never reaches attention
(`forward` swaps padded text for a learned embedding). A fresh SA3 model zero-initialises the convolutions
around the blocks and each block's `to_local_embed` output: the entry redraws them (`redraw`) so the inpainting path shows.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_GATHER = ContextParallelOutput(gather_dim=1, expected_dims=3)
_ROPE = ContextParallelInput(split_dim=0, expected_dims=2)

STABLE_AUDIO = {
    "": {"rotary_embedding": [_ROPE, _ROPE]},
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": _GATHER,
}

STABLE_AUDIO3 = {
    "transformer_blocks.*.self_attn": {"hidden_states": _TOKENS, "rope": _ROPE},
    "transformer_blocks.*.self_attn.to_out": _GATHER,
    "transformer_blocks.*.cross_attend_norm": {0: ContextParallelInput(1, 3, split_output=True)},
    "transformer_blocks.*.cross_attn": LocalAttention(),
    "transformer_blocks.*.cross_attn.to_out": _GATHER,
    "transformer_blocks.*.ff": {"hidden_states": _TOKENS},
    "transformer_blocks.*.ff.proj_out": _GATHER,
}


_SA = dict(sample_size=13, in_channels=8, num_layers=2, attention_head_dim=8, num_attention_heads=4,
           num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=16, time_proj_dim=16,
           global_states_input_dim=24, cross_attention_input_dim=12)


def _stable_audio(config, g, text=7):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    batch, length = 2, config["sample_size"]  # CFG: [zeroed negative text, prompt]
    text_embeds = randn(g, 1, text + 2, config["cross_attention_input_dim"])  # T5 tokens + start / end seconds
    global_states = randn(g, 1, 1, config["global_states_input_dim"]).repeat(batch, 1, 1)
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], length),
        timestep=torch.tensor([0.7]),  # the pipeline passes t.unsqueeze(0), one timestep for the batch
        encoder_hidden_states=torch.cat([torch.zeros_like(text_embeds), text_embeds]),
        global_hidden_states=global_states,
        rotary_embedding=get_1d_rotary_pos_embed(config["attention_head_dim"] // 2, length + 1, use_real=True,
                                                 repeat_interleave_real=False),
        return_dict=False,
    )


_SA3 = dict(io_channels=8, patch_size=1, embed_dim=32, depth=2, num_heads=4, cond_token_dim=16, global_cond_dim=12,
            local_add_cond_dim=9, timestep_features_dim=16, ff_mult=2.0, num_memory_tokens=3)


def _stable_audio3(config, g, length=13, text=6, inpaint=False):
    batch = 2  # CFG: [negative, prompt], each with its own padded text; the duration token appended valid
    inputs = dict(
        hidden_states=randn(g, batch, config["io_channels"], length),
        timestep=torch.full((batch,), 0.6),
        encoder_hidden_states=randn(g, batch, text + 1, config["cond_token_dim"]),
        global_hidden_states=randn(g, 1, config["global_cond_dim"]).repeat(batch, 1),
        encoder_attention_mask=padding_mask(batch, text + 1, [3, text + 1], dtype=torch.long),
        return_dict=False,
    )
    if inpaint:  # [frame mask, masked reference latents] along channels
        keep = (torch.arange(length) < 5).float()[None, None].repeat(batch, 1, 1)
        reference = randn(g, 1, config["io_channels"], length).repeat(batch, 1, 1)
        inputs["local_add_cond"] = torch.cat([keep, reference * keep], dim=1)
    return inputs


ENTRIES = [
    ModelEntry("StableAudioDiTModel", STABLE_AUDIO, _SA, {"t2a": _stable_audio}, anything=True,
               note="[global token, audio] split at the first block, pipeline rotary table split with it; "
                    "text cross-attention local"),
    ModelEntry("StableAudio3DiTModel", STABLE_AUDIO3, _SA3,
               {"t2a": _stable_audio3, "inpaint": lambda c, g: _stable_audio3(c, g, inpaint=True)},
               anything=True, redraw=("preprocess_conv.*", "postprocess_conv.*", "*.to_local_embed.2.*"),
               note="blocks run whole (memory tokens and inpainting found by an int count): self-attention, "
                    "cross-attention and feed-forward split inside each block; inpainting local_add_cond"),
]

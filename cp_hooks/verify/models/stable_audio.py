"""Verification of the stable_audio family's plans (`cp_hooks.plans.stable_audio`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

_SA = dict(
    sample_size=13,
    in_channels=8,
    num_layers=2,
    attention_head_dim=8,
    num_attention_heads=4,
    num_key_value_attention_heads=2,
    out_channels=8,
    cross_attention_dim=16,
    time_proj_dim=16,
    global_states_input_dim=24,
    cross_attention_input_dim=12,
)


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
        rotary_embedding=get_1d_rotary_pos_embed(
            config["attention_head_dim"] // 2, length + 1, use_real=True, repeat_interleave_real=False
        ),
        return_dict=False,
    )


_SA3 = dict(
    io_channels=8,
    patch_size=1,
    embed_dim=32,
    depth=2,
    num_heads=4,
    cond_token_dim=16,
    global_cond_dim=12,
    local_add_cond_dim=9,
    timestep_features_dim=16,
    ff_mult=2.0,
    num_memory_tokens=3,
)


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
    ModelEntry(
        "StableAudioDiTModel",
        config=_SA,
        cases={"t2a": _stable_audio},
        anything=True,
        note="[global token, audio] split at the first block, pipeline rotary table split with it; "
        "text cross-attention local",
    ),
    ModelEntry(
        "StableAudio3DiTModel",
        config=_SA3,
        cases={"t2a": _stable_audio3, "inpaint": lambda c, g: _stable_audio3(c, g, inpaint=True)},
        anything=True,
        redraw=("preprocess_conv.*", "postprocess_conv.*", "*.to_local_embed.2.*"),
        note="blocks run whole (memory tokens and inpainting found by an int count): self-attention, "
        "cross-attention and feed-forward split inside each block; inpainting local_add_cond",
    ),
]

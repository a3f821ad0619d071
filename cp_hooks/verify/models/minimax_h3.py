"""Verification of the minimax_h3 family's plans (`cp_hooks.plans.minimax_h3`, where each plan's reasons are): tiny
configs, the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import grid_ids, randn

_MINIMAX_H3 = dict(
    num_attention_heads=4,
    attention_head_dim=12,
    hidden_size=32,
    num_layers=2,
    num_refiner_layers=1,
    ffn_dim=64,
    in_channels=4,
    audio_in_channels=8,
    text_dim=16,
    freq_dim=32,
    time_embed_hidden_dim=32,
    time_embed_dim=16,
    rope_freq_dim=2,
)


def _minimax_h3(config, g, text=8, frames=2, height=4, width=6, audio=5):
    video = frames * height * width
    patch_dim = config["in_channels"] * 4  # (1, 2, 2) patch
    text_idx = torch.arange(text)
    video_idx = torch.arange(text, text + video)
    audio_idx = torch.arange(text + video, text + video + audio)
    tags = torch.cat([torch.ones(text), torch.zeros(video), torch.full((audio,), 2.0)]).long()
    t_index = torch.ones(text + video + audio, dtype=torch.long)
    t_index[: text + height * width] = 0  # the text and the conditioning first frame are clean
    positions = torch.cat(
        [grid_ids(text, 1, 1), grid_ids(frames, height, width) + torch.tensor([1.0, 0, 0]), grid_ids(audio, 1, 1)]
    ).long()
    return dict(
        hidden_states=randn(g, 2, video, patch_dim),
        audio_hidden_states=randn(g, 2, audio, config["audio_in_channels"]),
        encoder_hidden_states=randn(g, 2, text, config["text_dim"]),
        timestep=torch.tensor([0.0, 0.6]),
        timestep_indices=t_index,
        token_tags=tags,
        position_ids=positions,
        video_indices=video_idx,
        audio_indices=audio_idx,
        text_indices=text_idx,
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "MiniMaxH3Transformer3DModel",
        config=_MINIMAX_H3,
        cases={"ti2av": _minimax_h3},
        anything=True,
        note="packed [text, video, audio] rows with per-row modality tags and timestep indices "
        "(a clean conditioning frame); token refiner marked LocalAttention()",
    ),
]

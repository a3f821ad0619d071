"""Verification of the allegro family's plans (`cp_hooks.plans.allegro`, where each plan's reasons are): tiny configs,
the input cases of its pipelines.
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn

# cross_attention_dim is the inner dim: the caption projection maps the T5 text to it.
_ALLEGRO = dict(
    patch_size=2,
    patch_size_t=1,
    num_attention_heads=4,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    num_layers=2,
    cross_attention_dim=48,
    caption_channels=16,
    sample_height=8,
    sample_width=12,
    sample_frames=2,
)


def _rotary(config, frames, grid_height, grid_width):
    # AllegroPipeline._prepare_rotary_positional_embeddings, on the latent grid.
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=config["attention_head_dim"],
        crops_coords=((0, 0), (grid_height, grid_width)),
        grid_size=(grid_height, grid_width),
        temporal_size=frames,
        interpolation_scale=(
            config["interpolation_scale_t"],
            config["interpolation_scale_h"],
            config["interpolation_scale_w"],
        ),
    )
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
    pos_t, pos_h, pos_w = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), (pos_t, pos_h, pos_w)


def _allegro(config, g, frames=2, height=8, width=12, text=9, valid=(5, 9)):
    # CFG batch [negative, positive] with the T5 padding mask; 2 x 4 x 6 = 48 video tokens.
    batch = len(valid)
    p = config["patch_size"]
    return dict(
        hidden_states=randn(g, batch, config["in_channels"], frames, height, width),
        encoder_hidden_states=randn(g, batch, text, config["caption_channels"]),
        encoder_attention_mask=padding_mask(batch, text, list(valid), dtype=torch.long),
        timestep=torch.full((batch,), 700),
        image_rotary_emb=_rotary(config, frames // config["patch_size_t"], height // p, width // p),
        return_dict=False,
    )


ENTRIES = [
    ModelEntry(
        "AllegroTransformer3DModel",
        config=_ALLEGRO,
        cases={"t2v": _allegro},
        note="rotary position ids split inside the nested image_rotary_emb tuple (tables whole); CFG batch "
        "with a padded text mask; cross-attention marked LocalAttention()",
    ),
]

UNSUPPORTED: dict[str, str] = {}

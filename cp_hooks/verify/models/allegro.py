"""Allegro (AllegroTransformer3DModel): video self-attention split; T5 cross-attention local.

The video tokens are split at the input of the first block (`transformer_blocks.0`): `forward` patchifies
frame by frame and flattens (frames, patches) into one sequence just before the blocks, with no positional
table of its own (`pos_embed` has none). The final norm, modulation and `proj_out` are per token, so the
gather is at `proj_out`, before the unpatchify reshape.

Rotary embedding: the pipeline passes `image_rotary_emb=((freqs_t, freqs_h, freqs_w), (pos_t, pos_h, pos_w))`,
per-axis (cos, sin) frequency tables indexed by the video grid's coordinates, and per-token position ids of
shape (1, S) into them; the processor looks each token's angles up with `F.embedding(pos, table)`. So the
position ids are split with the tokens (a nested spec reaching the second tuple) and the tables, indexed by
coordinate and not by token, stay whole (None).

The self-attention (`attn1`) calls SDPA directly and is routed as context-parallel attention. The
cross-attention (`attn2`) attends to the replicated T5 text, with its padding mask turned into a key bias in
`forward`; its processor calls SDPA directly too, so it is marked LocalAttention().
"""

import torch

from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import padding_mask, randn
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, LocalAttention

_POSITIONS = ContextParallelInput(split_dim=1, expected_dims=2)

ALLEGRO = {
    # (tables: whole, (pos_t, pos_h, pos_w): split with the tokens)
    "": {"image_rotary_emb": (None, (_POSITIONS, _POSITIONS, _POSITIONS))},
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "transformer_blocks.*.attn2": LocalAttention(),
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


# cross_attention_dim is the inner dim: the caption projection maps the T5 text to it.
_ALLEGRO = dict(patch_size=2, patch_size_t=1, num_attention_heads=4, attention_head_dim=12, in_channels=4,
                out_channels=4, num_layers=2, cross_attention_dim=48, caption_channels=16, sample_height=8,
                sample_width=12, sample_frames=2)


def _rotary(config, frames, grid_height, grid_width):
    # AllegroPipeline._prepare_rotary_positional_embeddings, on the latent grid.
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=config["attention_head_dim"], crops_coords=((0, 0), (grid_height, grid_width)),
        grid_size=(grid_height, grid_width), temporal_size=frames,
        interpolation_scale=(config["interpolation_scale_t"], config["interpolation_scale_h"],
                             config["interpolation_scale_w"]),
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
    ModelEntry("AllegroTransformer3DModel", ALLEGRO, _ALLEGRO, {"t2v": _allegro},
               note="rotary position ids split inside the nested image_rotary_emb tuple (tables whole); CFG batch "
                    "with a padded text mask; cross-attention marked LocalAttention()"),
]

UNSUPPORTED = {}

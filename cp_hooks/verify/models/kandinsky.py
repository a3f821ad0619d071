"""Verification of the kandinsky family's plans (`cp_hooks.plans.kandinsky`, where each plan's reasons are): tiny
configs, the input cases of its pipelines, one-process reference processors.

Verification caveat: Kandinsky 5 zero-initialises its modulation layers, so with random weights every block's
gates are 0 and the forward comparison sees only the embeddings and the output layer; the backward check
compares the gradients of those modulation weights, which carry every block's attention output. The entry does
not redraw them (`redraw=("*modulation.out_layer.*",)` makes the outputs depend on every block, and the forward
check passes in every mode): diffusers' Kandinsky5AttnProcessor rounds the rotated queries and keys to bfloat16
(`apply_rotary` ends in `.to(torch.bfloat16)`), whose backward rounds their gradients to bfloat16 as well, so
once the attention reaches the output the query/key weight gradients differ from the one-process ones by
rounding flips of ~4e-3 per element (1e-4 to 3e-3 relative), far above the fp32 tolerance; the same flips appear
in one process when only the SDPA kernel changes.

Reference: uncompiled (eager) flex attention applies only a BlockMask's mask_mod, which diffusers leaves None, so
on CPU diffusers' processor attends densely to every key (equal to unmasked SDPA to 2e-7), and flex has no
backward on CPU. The entry's `prepare` installs `Kandinsky6SRReferenceProcessor`, the attention the compiled
kernel computes (the block selection above, `BlockMask.to_dense()` equal to it, through SDPA with the token mask),
as the one-process reference. The tiny config uses a (1, 3, 3) sliding-tile window (the checkpoints' (11, 7, 7)
covers a tiny grid whole), so the prior leaves about two thirds of the blocks out and the pooled-score selection
masks 10-13% of them.
"""

import torch
import torch.nn.functional as F

from cp_hooks.plans.kandinsky import _nabla_blocks, _sr_qkv, _tile_means, _token_mask
from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn

_LATENT = 4
_K5 = dict(
    in_visual_dim=_LATENT,
    out_visual_dim=_LATENT,
    in_text_dim=32,
    in_text_dim2=24,
    time_dim=32,
    patch_size=(1, 2, 2),
    model_dim=64,
    ff_dim=128,
    num_text_blocks=1,
    num_visual_blocks=2,
    axes_dims=(4, 6, 6),
)
_K5_I2V = dict(visual_cond=True)


def _kandinsky5(config, g, frames=2, height=8, width=12, text=9, cond=False):
    # Latents are channels-last, (B, frames, height, width, C); I2V appends [first-frame latents, its mask].
    latents = randn(g, 1, frames, height, width, _LATENT)
    if cond:
        visual_cond = torch.zeros_like(latents)
        visual_cond[:, :1] = randn(g, 1, 1, height, width, _LATENT)
        mask = torch.zeros(1, frames, height, width, 1)
        mask[:, :1] = 1.0
        latents = torch.cat([latents, visual_cond, mask], dim=-1)
    return dict(
        hidden_states=latents,
        encoder_hidden_states=randn(g, 1, text, config["in_text_dim"]),
        timestep=torch.full((1,), 950.0),
        pooled_projections=randn(g, 1, config["in_text_dim2"]),
        visual_rope_pos=[torch.arange(frames), torch.arange(height // 2), torch.arange(width // 2)],
        text_rope_pos=torch.arange(text),
        scale_factor=(1, 2, 2),
        return_dict=False,
    )


_K6_AUDIO = 6
# The released checkpoints' flags (ca_rope, cross_gates, fix_modulation, text padding) at tiny widths; the audio
# branch is narrower than the video one, as in the checkpoints.
_K6 = dict(
    in_visual_dim=_LATENT,
    out_visual_dim=_LATENT,
    in_text_dim=32,
    in_text_dim2=24,
    time_dim=32,
    patch_size=(1, 2, 2),
    model_dim=64,
    ff_dim=128,
    num_text_blocks=1,
    num_visual_blocks=2,
    axes_dims=(4, 6, 6),
    visual_cond=True,
    in_audio_dim=_K6_AUDIO,
    out_audio_dim=_K6_AUDIO,
    model_dim_a=32,
    time_dim_a=32,
    ff_dim_a=64,
    axes_dims_a=(4, 6, 6),
    text_token_padding=True,
    ca_rope=True,
    cross_gates=True,
    fix_modulation=True,
    visual_token_type_num_embeddings=2,
)


def _kandinsky6(config, g, frames=2, height=8, width=10, text=9, valid=6, audio=7, image=False):
    """The TI2VA pipeline's call: channels-last video [latents, zero cond latents, cond mask], optional audio."""
    latents = randn(g, 1, frames, height, width, _LATENT)
    mask = torch.zeros(1, frames, height, width, 1)
    inputs = dict(
        encoder_hidden_states=randn(g, 1, text, config["in_text_dim"]),
        pooled_projections=randn(g, 1, config["in_text_dim2"]),
        timestep=torch.full((1,), 950.0),
        # The pipeline passes None when no prompt token is padding.
        encoder_attention_mask=torch.arange(text)[None] < valid if valid < text else None,
        return_dict=False,
    )
    if image:  # the reference frame appended as a masked tail frame at temporal position 0, token type 1
        latents = torch.cat([latents, randn(g, 1, 1, height, width, _LATENT)], dim=1)
        mask = torch.cat([mask, torch.ones(1, 1, height, width, 1)], dim=1)
        inputs["visual_token_type_ids"] = torch.tensor([[0] * frames + [1]])
        inputs["visual_rope_pos"] = (
            torch.cat([torch.arange(frames), torch.zeros(1, dtype=torch.long)]),
            torch.arange(height // 2),
            torch.arange(width // 2),
        )
    inputs["hidden_states"] = torch.cat([latents, torch.zeros_like(latents), mask], dim=-1)
    if audio:
        inputs["audio_hidden_states"] = randn(g, 1, audio, config["in_audio_dim"])
    return inputs


class Kandinsky6SRReferenceProcessor:
    """The one-process reference: Kandinsky6SRAttnProcessor's attention as its compiled flex kernel computes it.

    diffusers' processor hands flex a BlockMask of full blocks and no mask_mod. Compiled, flex visits only those
    blocks; uncompiled (eager, what a CPU test can run) it applies only the mask_mod, so it attends densely to
    every key (measured: equal to unmasked SDPA to 2e-7), and it has no backward on CPU at all. This runs the
    same block selection (`BlockMask.to_dense()` equals `_nabla_blocks`) expanded to a (B, heads, S, S) token
    mask through SDPA, forward and backward.
    """

    def __init__(self, original) -> None:
        self.original = original

    def __call__(self, attn, hidden_states, rotary_emb, sparse_params):
        query, key, value = _sr_qkv(attn, hidden_states, rotary_emb)
        blocks = _nabla_blocks(
            _tile_means(query), _tile_means(key), sparse_params["sta_mask"], sparse_params["threshold"]
        )
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=_token_mask(blocks)
        )
        return attn.out_layer(out.transpose(1, 2).flatten(2, 3))


def _sr_reference(model, generator) -> None:
    """Install Kandinsky6SRReferenceProcessor: the sparse attention the model computes compiled (see its docstring)."""
    for block in model.visual_transformer_blocks:
        block.self_attention.set_processor(Kandinsky6SRReferenceProcessor(block.self_attention.processor))


_SR_LATENT = 4
# A sliding-tile window of (1, 3, 3) tiles (the checkpoints' (11, 7, 7) covers a tiny grid whole), so that the
# prior leaves blocks out and the pooled-score selection decides them; the checkpoints' threshold.
_K6_SR = dict(
    in_visual_dim=_SR_LATENT,
    out_visual_dim=_SR_LATENT,
    time_dim=32,
    model_dim=64,
    ff_dim=128,
    num_visual_blocks=2,
    axes_dims=(4, 6, 6),
    nabla_window=(1, 3, 3),
    nabla_threshold=0.8,
)


def _kandinsky6_sr(config, g, batch=1, frames=3, height=16, width=16):
    """Kandinsky6SRPipeline's call: a batch of latent tiles (tiles_batch_size), channels-last
    [noisy latents, zero anchor latents, zero anchor mask], the step's timestep per tile."""
    latents = randn(g, batch, frames, height, width, config["in_visual_dim"])
    hidden = torch.cat([latents, torch.zeros_like(latents), torch.zeros(batch, frames, height, width, 1)], dim=-1)
    return dict(hidden_states=hidden, timestep=torch.full((batch,), 937.5), return_dict=False)


ENTRIES = [
    ModelEntry(
        "Kandinsky5Transformer3DModel",
        config=_K5,
        cases={
            "t2v": _kandinsky5,
            "t2i": lambda c, g: _kandinsky5(c, g, frames=1, height=10),
            "i2v": lambda c, g: _kandinsky5(c, g, cond=True),
        },
        case_configs={"i2v": _K5_I2V},
        anything=True,
        note="split along the video's height rows (with visual_rope_pos[1]); text encoder blocks and "
        "cross-attention local; T2I single frame, I2V first-frame condition; nabla attention refused",
    ),
    ModelEntry(
        "Kandinsky6Transformer3DModel",
        config=_K6,
        cases={
            "t2va": _kandinsky6,
            "i2va": lambda c, g: _kandinsky6(c, g, image=True, audio=9, valid=9),
            "t2v": lambda c, g: _kandinsky6(c, g, audio=0, height=6),
        },
        anything=True,
        note="fused video + audio blocks: the flattened video split at the first block and gathered at the "
        "last (visual_transformer_blocks.-1), the audio from its embedding to its output layer; text "
        "branches and text cross-attention local; I2V tail frame, video-only T2V, padded text",
    ),
    ModelEntry(
        "Kandinsky6SRTransformer3DModel",
        config=_K6_SR,
        cases={
            "tile": _kandinsky6_sr,
            "tiles_batch": lambda c, g: _kandinsky6_sr(c, g, batch=2, frames=2, height=24, width=16),
        },
        prepare=_sr_reference,
        note="NABLA sparse attention through a processor of the plan's own (ContextParallelProcessor): pooled "
        "tile queries/keys all-gathered, the same block selection on every rank, one whole-sequence "
        "token mask per head; split in forward's 8x8-tile order; square and portrait tiles, batch of "
        "2 tiles; one-process backward through a dense-mask twin of the flex processor (no flex "
        "backward on CPU)",
    ),
]

UNSUPPORTED: dict[str, str] = {}

"""Kandinsky 5 (Kandinsky5Transformer3DModel): the video is split along its height, the text stays whole.

The model keeps the video as a (batch, frames, height, width, dim) grid until the blocks: `forward` computes
the 3-D rotary table from that grid's shape and the pipeline's per-axis positions `visual_rope_pos`, flattens
both, runs the blocks, and reshapes the tokens back to the grid's shape before the output layer. So the split
is along the height rows of the patch embedding's output (every rank holds whole rows of every frame; images
have one frame, so the frames cannot be split), together with the height positions (`visual_rope_pos[1]`): the
table, the flattening and the reshape then all see the local grid, and the output layer's result is gathered
along its height. Attention does not depend on the order of its keys, so the per-rank row blocks are exact.

The Qwen text runs through its own encoder blocks (self-attention over the whole text, replicated) and is
the replicated key set of the visual blocks' cross-attention: Kandinsky's processor passes its config for
every call, so both are marked LocalAttention(). Refused: `attention_type="nabla"`, whose sparse attention
builds a flex BlockMask from the pooled scores of all queries against all keys (a query x key mask).

Verification caveat: Kandinsky 5 zero-initialises its modulation layers, so with random weights every block's
gates are 0 and the forward comparison sees only the embeddings and the output layer; the backward check
compares the gradients of those modulation weights, which carry every block's attention output. The entry does
not redraw them (`redraw=("*modulation.out_layer.*",)` makes the outputs depend on every block, and the forward
check passes in every mode): diffusers' Kandinsky5AttnProcessor rounds the rotated queries and keys to bfloat16
(`apply_rotary` ends in `.to(torch.bfloat16)`), whose backward rounds their gradients to bfloat16 as well, so
once the attention reaches the output the query/key weight gradients differ from the one-process ones by
rounding flips of ~4e-3 per element (1e-4 to 3e-3 relative), far above the fp32 tolerance; the same flips appear
in one process when only the SDPA kernel changes.

Kandinsky 6 SR (Kandinsky6SRTransformer3DModel): every self-attention is NABLA sparse attention. `forward`
reorders the tokens into 8x8 spatial tiles of 64 consecutive tokens (`_local_patch`, the rotary table alike) and
builds the sliding-tile prior `sta_mask` over the (frames, height / 8, width / 8) tile grid; the processor pools
each tile's queries and keys (mean over its 64 tokens, per head), softmaxes the pooled scores of every query tile
against every key tile, keeps the tiles above the 1 - threshold cumulative tail, ORs in the prior, and attends
through a flex BlockMask whose selected 64 x 64 blocks are full (a per-head query x key mask). The plan splits
the tile-ordered tokens at the first block (tag "tiles") and their rotary table in every block, so each rank holds
consecutive whole tiles in the mask's order, and gathers at the last block's output, before `_local_merge`. Every
attention module gets a processor of the plan's own (ContextParallelProcessor): each rank pools its own tiles,
all-gathers the pooled queries and keys (B x heads x tiles x head_dim, tiny) over the context-parallel group,
computes the same block selection as diffusers, and attends one head at a time through context_parallel_attention
with that head's selection expanded to a whole-sequence token mask (B, 1, S, S): the core takes whole masks
shared by all heads only, and Ulysses scatters heads, so each call repeats its head once per Ulysses rank (with
Ulysses every rank of a group computes the same head: the attention work is not divided by the Ulysses degree,
only by the ring's). The tile count must divide evenly over the ranks (refused with an error otherwise).

Reference: uncompiled (eager) flex attention applies only a BlockMask's mask_mod, which diffusers leaves None, so
on CPU diffusers' processor attends densely to every key (equal to unmasked SDPA to 2e-7), and flex has no
backward on CPU. The entry's `prepare` installs `Kandinsky6SRReferenceProcessor`, the attention the compiled
kernel computes (the block selection above, `BlockMask.to_dense()` equal to it, through SDPA with the token mask),
as the one-process reference. The tiny config uses a (1, 3, 3) sliding-tile window (the checkpoints' (11, 7, 7)
covers a tiny grid whole), so the prior leaves about two thirds of the blocks out and the pooled-score selection
masks 10-13% of them.
"""

import math

import torch
import torch.nn.functional as F

from cp_hooks import comm
from cp_hooks.attention import context_parallel_attention
from cp_hooks.verify.catalogue import ModelEntry
from cp_hooks.verify.catalogue._inputs import randn
from cp_hooks.forward.lengths import shard_sizes
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, ContextParallelProcessor, LocalAttention, UnsupportedConfig

_ROWS = ContextParallelInput(split_dim=2, expected_dims=5, split_output=True)

KANDINSKY5 = {
    "": {"visual_rope_pos": [None, ContextParallelInput(split_dim=0, expected_dims=1), None]},
    "visual_embeddings": {0: _ROWS},
    "text_transformer_blocks.*.self_attention": LocalAttention(),
    "visual_transformer_blocks.*.cross_attention": LocalAttention(),
    "out_layer": ContextParallelOutput(gather_dim=2, expected_dims=5),
}

_REFUSED_K5 = (
    UnsupportedConfig("", "config.attention_type", ("nabla",),
                      "its sparse (nabla) attention builds a flex BlockMask from the pooled scores of all queries "
                      "against all keys, a query x key mask that cannot be split."),
)

_LATENT = 4
_K5 = dict(in_visual_dim=_LATENT, out_visual_dim=_LATENT, in_text_dim=32, in_text_dim2=24, time_dim=32,
           patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2,
           axes_dims=(4, 6, 6))
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


# Kandinsky 6: the flattened video is split at the first fused block and gathered at the last one (see the
# module docstring); the audio is split from its embedding to its output layer.
_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3)
_TABLE = ContextParallelInput(split_dim=0, expected_dims=5)  # (seq, 1, head_dim / 2, 2, 2) rotation matrices

KANDINSKY6 = {
    "video_text_transformer_blocks.*.attn": LocalAttention(),
    "audio_text_transformer_blocks.*.attn": LocalAttention(),
    "visual_transformer_blocks.0": {"vis": _TOKENS},
    "visual_transformer_blocks.*": {"vis_rope": _TABLE},
    "visual_transformer_blocks.*.video_dec_block.cross_attention": LocalAttention(),
    "visual_transformer_blocks.*.audio_dec_block.cross_attention": LocalAttention(),
    # Output 1 (the audio) is already split and may be None (video only): only the video is gathered here.
    "visual_transformer_blocks.-1": [ContextParallelOutput(gather_dim=1, expected_dims=3)],
    "audio_embeddings": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "audio_rope_embeddings": {0: ContextParallelInput(split_dim=0, expected_dims=5, split_output=True)},
    "audio_out_layer": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_K6_AUDIO = 6
# The released checkpoints' flags (ca_rope, cross_gates, fix_modulation, text padding) at tiny widths; the audio
# branch is narrower than the video one, as in the checkpoints.
_K6 = dict(in_visual_dim=_LATENT, out_visual_dim=_LATENT, in_text_dim=32, in_text_dim2=24, time_dim=32,
           patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6),
           visual_cond=True, in_audio_dim=_K6_AUDIO, out_audio_dim=_K6_AUDIO, model_dim_a=32, time_dim_a=32,
           ff_dim_a=64, axes_dims_a=(4, 6, 6), text_token_padding=True, ca_rope=True, cross_gates=True,
           fix_modulation=True, visual_token_type_num_embeddings=2)


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
        inputs["visual_rope_pos"] = (torch.cat([torch.arange(frames), torch.zeros(1, dtype=torch.long)]),
                                     torch.arange(height // 2), torch.arange(width // 2))
    inputs["hidden_states"] = torch.cat([latents, torch.zeros_like(latents), mask], dim=-1)
    if audio:
        inputs["audio_hidden_states"] = randn(g, 1, audio, config["in_audio_dim"])
    return inputs



# Kandinsky 6 SR: NABLA sparse self-attention, served through a processor of the plan's own (see the module
# docstring, "Kandinsky 6 SR").
_TILE = 64  # tokens of one 8x8 tile: NABLA's block size, the same for queries and keys


def _sr_qkv(attn, hidden_states, rotary_emb):
    """Kandinsky6SRAttnProcessor's queries, keys and values, (B, S, heads, head_dim), from the tokens it gets."""
    from diffusers.models.transformers.transformer_kandinsky6_sr import apply_rotary

    query = attn.to_query(hidden_states).unflatten(-1, (attn.num_heads, -1))
    key = attn.to_key(hidden_states).unflatten(-1, (attn.num_heads, -1))
    value = attn.to_value(hidden_states).unflatten(-1, (attn.num_heads, -1))
    query = attn.query_norm(query.float()).type_as(query)
    key = attn.key_norm(key.float()).type_as(key)
    return apply_rotary(query, rotary_emb), apply_rotary(key, rotary_emb), value


def _tile_means(x: torch.Tensor) -> torch.Tensor:
    """(B, S, H, D) -> (B, H, S / 64, D): each tile's mean, computed as `nabla_block_mask` computes it."""
    x = x.detach().transpose(1, 2)
    b, h, s, d = x.shape
    return x.reshape(b, h, s // _TILE, _TILE, d).mean(-2)


def _nabla_blocks(qa: torch.Tensor, ka: torch.Tensor, sta: torch.Tensor, thr: float) -> torch.Tensor:
    """`nabla_block_mask`'s block selection, (B, H, tiles, tiles) boolean (True = the query tile attends to the
    whole key tile): the smallest pooled scores whose cumulative sum stays below 1 - thr are dropped, then the
    sliding-tile prior is added. The same operations on the same values as diffusers' (the flex BlockMask it
    builds from them marks every selected block full, mask_mod=None)."""
    ka = ka.transpose(-2, -1)
    attn_map = torch.softmax((qa @ ka) / math.sqrt(qa.shape[-1]), dim=-1)
    vals, inds = attn_map.sort(-1)
    mask = (vals.cumsum_(-1) >= 1 - thr).int().gather(-1, inds.argsort(-1))
    return torch.logical_or(mask, sta)


def _token_mask(blocks: torch.Tensor) -> torch.Tensor:
    """A (..., tiles, tiles) block mask expanded to its (..., S, S) token mask (tiles are 64 consecutive tokens)."""
    return blocks.repeat_interleave(_TILE, dim=-2).repeat_interleave(_TILE, dim=-1)


class Kandinsky6SRContextParallelProcessor:
    """Kandinsky6SRAttnProcessor's NABLA attention, computed from this rank's shard of the tile-ordered tokens.

    Every rank pools its own whole tiles, all-gathers the pooled queries and keys (B x heads x tiles x head_dim
    each, small) over the context-parallel group, selects the same blocks as the one-process processor, and
    attends head by head with that head's block mask expanded to a whole-sequence token mask (B, 1, S, S).
    """

    def __init__(self, attn, original, runtime) -> None:
        self.runtime = runtime

    def __call__(self, attn, hidden_states, rotary_emb, sparse_params):
        rt = self.runtime
        query, key, value = _sr_qkv(attn, hidden_states, rotary_emb)
        whole = rt.split_lengths.named["tiles"]
        sizes = shard_sizes(whole, rt.world_size)
        if len(set(sizes)) > 1 or sizes[0] % _TILE:  # shapes only: raised alike on every rank
            raise ValueError(
                f"Kandinsky6SRTransformer3DModel's NABLA attention pools whole 8x8 tiles of {_TILE} tokens: the "
                f"{whole // _TILE} tiles of this input do not divide evenly over {rt.world_size} ranks (shards "
                f"{sizes}). Use a tile grid (frames x height / 8 x width / 8 tokens) divisible by the degree."
            )
        # Pooled queries and keys of every tile, in sequence order: rank r of the flat group holds shard r (the
        # selection takes no gradient).
        stats = comm.all_gather(torch.stack([_tile_means(query), _tile_means(key)]), None, rt.flat_group, dim=3)
        blocks = _nabla_blocks(stats[0], stats[1], sparse_params["sta_mask"], sparse_params["threshold"])
        # The mask differs between heads, and a whole-sequence mask is shared by the heads of one call: one call
        # per head. Ulysses scatters heads, so the head is repeated once per Ulysses rank (copy 0 is kept).
        u = rt.ulysses_degree
        outs = []
        for h in range(query.shape[2]):
            q, k, v = (t[:, :, h:h + 1].expand(-1, -1, u, -1).contiguous() for t in (query, key, value))
            out = context_parallel_attention(q, k, v, _token_mask(blocks[:, h:h + 1]), config=rt)
            outs.append(out[:, :, :1])
        return attn.out_layer(torch.cat(outs, dim=2).flatten(2, 3))


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
        blocks = _nabla_blocks(_tile_means(query), _tile_means(key), sparse_params["sta_mask"],
                               sparse_params["threshold"])
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             attn_mask=_token_mask(blocks))
        return attn.out_layer(out.transpose(1, 2).flatten(2, 3))


def _sr_reference(model, generator) -> None:
    """Install Kandinsky6SRReferenceProcessor: the sparse attention the model computes compiled (see its docstring)."""
    for block in model.visual_transformer_blocks:
        block.self_attention.set_processor(Kandinsky6SRReferenceProcessor(block.self_attention.processor))


# The tokens reach the blocks already reordered into 8x8 tiles (forward's `_local_patch`), the order of NABLA's
# blocks: the split takes consecutive whole tiles, the rotary table (S, 1, head_dim / 2, 2, 2) likewise.
KANDINSKY6_SR = {
    "visual_transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, tag="tiles")},
    "visual_transformer_blocks.*": {"rotary_emb": ContextParallelInput(split_dim=0, expected_dims=5)},
    "visual_transformer_blocks.*.self_attention": ContextParallelProcessor(Kandinsky6SRContextParallelProcessor),
    "visual_transformer_blocks.-1": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

_SR_LATENT = 4
# A sliding-tile window of (1, 3, 3) tiles (the checkpoints' (11, 7, 7) covers a tiny grid whole), so that the
# prior leaves blocks out and the pooled-score selection decides them; the checkpoints' threshold.
_K6_SR = dict(in_visual_dim=_SR_LATENT, out_visual_dim=_SR_LATENT, time_dim=32, model_dim=64, ff_dim=128,
              num_visual_blocks=2, axes_dims=(4, 6, 6), nabla_window=(1, 3, 3), nabla_threshold=0.8)


def _kandinsky6_sr(config, g, batch=1, frames=3, height=16, width=16):
    """Kandinsky6SRPipeline's call: a batch of latent tiles (tiles_batch_size), channels-last
    [noisy latents, zero anchor latents, zero anchor mask], the step's timestep per tile."""
    latents = randn(g, batch, frames, height, width, config["in_visual_dim"])
    hidden = torch.cat([latents, torch.zeros_like(latents), torch.zeros(batch, frames, height, width, 1)], dim=-1)
    return dict(hidden_states=hidden, timestep=torch.full((batch,), 937.5), return_dict=False)


ENTRIES = [
    ModelEntry("Kandinsky5Transformer3DModel", KANDINSKY5, _K5,
               {"t2v": _kandinsky5, "t2i": lambda c, g: _kandinsky5(c, g, frames=1, height=10),
                "i2v": lambda c, g: _kandinsky5(c, g, cond=True)},
               case_configs={"i2v": _K5_I2V}, anything=True, unsupported=_REFUSED_K5,
               note="split along the video's height rows (with visual_rope_pos[1]); text encoder blocks and "
                    "cross-attention local; T2I single frame, I2V first-frame condition; nabla attention refused"),
    ModelEntry("Kandinsky6Transformer3DModel", KANDINSKY6, _K6,
               {"t2va": _kandinsky6, "i2va": lambda c, g: _kandinsky6(c, g, image=True, audio=9, valid=9),
                "t2v": lambda c, g: _kandinsky6(c, g, audio=0, height=6)},
               anything=True,
               note="fused video + audio blocks: the flattened video split at the first block and gathered at the "
                    "last (visual_transformer_blocks.-1), the audio from its embedding to its output layer; text "
                    "branches and text cross-attention local; I2V tail frame, video-only T2V, padded text"),
    ModelEntry("Kandinsky6SRTransformer3DModel", KANDINSKY6_SR, _K6_SR,
               {"tile": _kandinsky6_sr,
                "tiles_batch": lambda c, g: _kandinsky6_sr(c, g, batch=2, frames=2, height=24, width=16)},
               prepare=_sr_reference,
               note="NABLA sparse attention through a processor of the plan's own (ContextParallelProcessor): pooled "
                    "tile queries/keys all-gathered, the same block selection on every rank, one whole-sequence "
                    "token mask per head; split in forward's 8x8-tile order; square and portrait tiles, batch of "
                    "2 tiles; one-process backward through a dense-mask twin of the flex processor (no flex "
                    "backward on CPU)"),
]

UNSUPPORTED = {}

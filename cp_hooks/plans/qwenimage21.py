"""Qwen-Image 2.1 (QwenImage21Transformer2DModel): block-causal attention over one joint sequence, KV cache.

`forward` builds one joint sequence — the text with the condition images' latent tokens substituted at the
vision-language encoder's image slots, then the target image — and runs single-stream blocks over it. Its
attention is block-causal: a text query sees every key before it, an image query every key up to the end of
its own image block, the target image everything. The model's SDPA processor runs that as one call per prefix
segment, slicing queries and keys at absolute positions of the whole sequence (`query[:, start:end]`,
`key[:, :end]`); with a KV cache (QwenImage21Pipeline's default, `causal_condition=True`) the first step
("extract") also stores the prefix keys and values by position, and later steps ("cached") recompute only
the target image's tokens against them.

No split of the processor's inputs can serve those slices, so the plan gives every attention module a processor
of its own while enabled (`ContextParallelProcessor`): it builds the block-causal mask over the whole sequence
from the model's segments (absolute positions, the same on every rank) and lets cp_hooks' attention take its
queries' rows (docs/architecture.md, "Masks"); it stores each rank's part of the prefix in the cache and, on
cached steps, attends over [its cached prefix part, its target shard] with the text mask cut to those keys.
The joint sequence is split at the first block (tagged "joint": the processor reads its whole length); the
rotary table and the per-token modulation selector `target_token_mask` reach every block whole and are split
there, and at the final norm; the output is gathered at `proj_out`. A cached step's keys differ in number
between ranks (the prefix boundary falls inside a shard), so the anything flags are needed for them.
"""

from __future__ import annotations

import torch

from cp_hooks.attention import context_parallel_attention
from cp_hooks.attention.masks import SameInputsMemo
from cp_hooks.forward.lengths import shard_sizes
from cp_hooks.plans.specs import ContextParallelInput, ContextParallelOutput, ContextParallelProcessor, PlanDeclaration


class QwenImage21ContextParallelProcessor:
    """QwenImage21AttnProcessor's attention, computed from this rank's shard of the joint sequence."""

    def __init__(self, attn, original, runtime) -> None:
        self.original = original
        self.runtime = runtime

    def _shard(self, whole: int, rank: int | None = None) -> tuple[int, int]:
        """(offset, length) of a rank's piece (this rank's by default) of a sequence of `whole` tokens."""
        rank = self.runtime.rank if rank is None else rank
        sizes = shard_sizes(whole, self.runtime.world_size)
        return sum(sizes[:rank]), sizes[rank]

    def _prefix_part(self, prefix_len: int, prefill: int, rank: int | None = None) -> tuple[int, int]:
        """(offset, length) of the prefix rows in a rank's shard of the prefill pass (what it cached)."""
        offset, length = self._shard(prefill, rank)
        return offset, max(0, min(prefix_len - offset, length))

    def __call__(
        self,
        attn,
        hidden_states,
        attention_mask=None,
        rotary_emb=None,
        layer_cache=None,
        kv_cache_mode=None,
        cache_write_slice=None,
        segments=None,
        key_valid=None,
    ):
        from diffusers.models.transformers.transformer_qwenimage21 import apply_rotary_emb_qwen

        head_dim = attn.inner_dim // attn.heads
        query, key, value = (
            proj(hidden_states).unflatten(-1, (-1, head_dim)) for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        query, key = attn.norm_q(query).to(value.dtype), attn.norm_k(key).to(value.dtype)
        if rotary_emb is not None:
            query = apply_rotary_emb_qwen(query, rotary_emb, use_real=False)
            key = apply_rotary_emb_qwen(key, rotary_emb, use_real=False)
        whole = self.runtime.split_lengths.named["joint"]  # this forward's joint (or target) length

        if segments is None:  # no prefix structure: every query sees every key
            if kv_cache_mode == "cached":
                query, key, value, attention_mask = self._with_cached_prefix(
                    query, key, value, attention_mask, layer_cache, whole
                )
            out = context_parallel_attention(query, key, value, attention_mask, config=self.runtime)
        else:
            prefix_len = segments[-1][1] if segments else 0
            if layer_cache is not None and kv_cache_mode == "extract" and cache_write_slice is not None:
                # This rank's part of the prefix: the rows of its shard before prefix_len (clones: see diffusers).
                _, mine = self._prefix_part(prefix_len, whole)
                layer_cache.store(key[:, :mine].clone(), value[:, :mine].clone())
                layer_cache.cp_prefix = (prefix_len, whole)
            mask = _MASKS.get(
                (segments, prefix_len, whole, key_valid, query.device),
                lambda: _block_causal_mask(segments, prefix_len, whole, key_valid, query.device),
            )
            out = context_parallel_attention(query, key, value, mask, config=self.runtime)

        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _with_cached_prefix(self, query, key, value, attention_mask, layer_cache, target):
        """Keys and values [this rank's cached prefix part, its target shard], and the text mask cut to them."""
        prefix_len, prefill = layer_cache.cp_prefix
        prefix_offset, mine = self._prefix_part(prefix_len, prefill)
        counts = [
            self._prefix_part(prefix_len, prefill, r)[1] + self._shard(target, r)[1]
            for r in range(self.runtime.world_size)
        ]  # every rank's key count: the same decision on all
        if len(set(counts)) > 1 and not self.runtime.anything:
            raise ValueError(
                "QwenImage21Transformer2DModel's cached steps attend over each rank's part of the cached prefix plus "
                f"its target shard, {counts} keys on the ranks; uneven key counts need "
                "ContextParallelConfig(ulysses_anything=True) / ring_anything=True."
            )
        cached_k, cached_v = layer_cache.get()
        key, value = torch.cat([cached_k, key], dim=1), torch.cat([cached_v, value], dim=1)
        if attention_mask is not None:  # (B, 1, 1, prefix_len + target) whole: keep the columns of these keys
            offset, length = self._shard(target)
            attention_mask = torch.cat(
                [
                    attention_mask[..., prefix_offset : prefix_offset + mine],
                    attention_mask[..., prefix_len + offset : prefix_len + offset + length],
                ],
                -1,
            )
        return query, key, value, attention_mask


# The mask is the same in every layer of a forward (segments and key_valid are computed once by `forward`).
_MASKS = SameInputsMemo()


def _block_causal_mask(segments, prefix_len: int, whole: int, key_valid, device) -> torch.Tensor:
    """The (B or 1, 1, S, S) boolean mask of QwenImage21AttnProcessor's prefill, over the whole sequence.

    A prefix segment (start, end, is_text) attends to the keys [0, end), a text segment causally within
    itself; the target image (prefix_len on) attends to everything; padded text keys are masked for all.
    """
    mask = torch.ones(whole, whole, dtype=torch.bool, device=device)
    for start, end, is_text in segments:
        mask[start:end, end:] = False
        if is_text:
            mask[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool, device=device).tril()
    mask = mask[None, None]
    if key_valid is not None:
        mask = mask & key_valid.bool()[:, None, None, :]
    return mask


_TOKENS = ContextParallelInput(split_dim=1, expected_dims=3, tag="joint")
_PER_TOKEN = ContextParallelInput(split_dim=0, expected_dims=1)  # (S,) target_token_mask

QWENIMAGE21 = {
    "transformer_blocks.0": {"hidden_states": _TOKENS},
    "transformer_blocks.*": {
        "rotary_emb": ContextParallelInput(split_dim=0, expected_dims=2),
        "target_token_mask": _PER_TOKEN,
    },
    "transformer_blocks.*.attn": ContextParallelProcessor(QwenImage21ContextParallelProcessor),
    "norm_out": {"target_token_mask": _PER_TOKEN},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


PLANS = {
    "QwenImage21Transformer2DModel": PlanDeclaration(plan=QWENIMAGE21),
}

"""The short plan-writing guide printed under the model table (part of the generated README section)."""

GUIDE = """### Writing a plan for a new model

1. **Where to split.** Find the first point in `forward` where the tokens are a `(batch, seq, dim)` tensor
   and split there: a forward input (`"": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)}`),
   the output of the patch embedding (`"pos_embed": {0: ContextParallelInput(1, 3, split_output=True)}`), or the
   input of the first block (`"blocks.0": {...}`; later blocks get the split tensor from it). Gather once, at
   the last module that still has one row per token (usually `proj_out`, before the unpatchify reshape):
   `"proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)`.
2. **Positional embeddings.** Rotary tables computed from the full grid in `forward` must be split like the
   tokens: `split_output=True` on the module that returns them (`"rope": {0: ..., 1: ...}`), or split the
   position ids they are computed from (Flux's `img_ids` / `txt_ids`). A table whose values depend on a
   length (QwenImage's text table) must be computed before the split.
3. **Text tokens.** Joint attention (text and image in one attention, Flux, SD3, QwenImage): split the text
   too, or its keys are counted once per rank. Cross-attention over replicated text (Wan, PixArt): leave
   the text whole and make sure that attention runs locally: diffusers processors that pass
   `parallel_config=None` for it need nothing, processors that pass their config for every call and modules that
   call SDPA directly need `"blocks.*.attn2": LocalAttention()`.
4. **Masks.** A key-padding mask must be split with its keys, in every block that receives it from
   `forward` (`"blocks.*": {"encoder_attention_mask": ContextParallelInput(1, 2)}`). A boolean self-attention
   mask `v[q] & v[k]` built from such a mask inside the processor (HunyuanVideo 1.5) is read as a key-padding
   mask, so split the vector it is built from the same way; other masks that vary along queries
   (block-causal, general query x key masks) cannot be split and are refused.
5. **Per-token conditioning.** Any tensor with one row per token (per-token timesteps, modulation indices)
   must be split with the tokens; `skip_other_dims=True` leaves its per-sample variants whole. A module
   that finds tokens by a plain int counted from the start of the whole sequence (a history length, a
   first frame's token count) cannot be split: if a config option turns such a module on, declare it with
   `register_plan(..., unsupported=(UnsupportedConfig(module, attribute, values, reason),))` so that it is
   refused rather than computed wrongly.
6. **Check it.** `torchrun --nproc_per_node 2 -m cp_hooks check MyModel --plan my_plans:PLAN`: a split that
   misses a tensor carrying the sequence gives a wrong result, not a crash, and the checker prints FAIL. Then
   `cp_hooks.register_plan(MyModel, PLAN)`, or add a family file under `cp_hooks/models/` (see "Adding a model family").
"""

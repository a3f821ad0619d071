"""The short plan-writing guide printed under the model table (part of the generated section of docs/models.md)."""

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
   mask, so split the vector it is built from the same way. Other masks that vary along queries
   (block-causal, segment masks) are not split at all: leave whatever they are built from whole, so that every
   rank holds the mask over the whole sequence, (B or 1, 1, S, S), and split the tokens once, in the mask's
   order; each rank's attention then takes its queries' rows and each key block its columns (Ideogram 4:
   `segment_ids` whole, the tokens split at the first layer). A query x key mask built from split inputs
   covers only the local shards and is refused.
   A mask or table that `forward` builds once over several streams back to back ([image, text]), while each
   block concatenates its local image and text shards, is split stream by stream: tag the streams' own splits
   and name the tags, in order, as segments (JoyImage Edit Plus's key mask):
   `"double_blocks.0": {"hidden_states": ContextParallelInput(1, 3, tag="image"), "encoder_hidden_states":
   ContextParallelInput(1, 3, tag="text")}` and `"double_blocks.*": {"attention_mask":
   ContextParallelInput(3, 4, segments=("image", "text"))}`. A tagged split records its full length every
   forward, and a segmented split must run after it (at a later module, or a later entry of the plan; within
   one entry the segmented splits run last). One segment may be `None`: a stream already local, kept whole.
5. **Per-token conditioning.** Any tensor with one row per token (per-token timesteps, modulation indices)
   must be split with the tokens; `skip_other_dims=True` leaves its per-sample variants whole. A module
   that finds tokens by a plain int counted from the start of the whole sequence (a history length, a
   first frame's token count) cannot be split: if a config option turns such a module on, declare it with
   `register_plan(..., unsupported=(UnsupportedConfig(module, attribute, values, reason),))` so that it is
   refused rather than computed wrongly.
6. **Check it.** `torchrun --nproc_per_node 2 -m cp_hooks check MyModel --plan my_plans:PLAN`: a split that
   misses a tensor carrying the sequence gives a wrong result, not a crash, and the checker prints FAIL. Then
   `cp_hooks.register_plan(MyModel, PLAN)`, or add a family to cp_hooks (see "Adding a model family").

### Adding a model family, end to end (CogView 4)

Three places, nothing else: the plan in `cp_hooks/plans/cogview.py` (its `PLANS`, the reasons in the module
docstring), one line per class in `cp_hooks/plans/index.py` (class name -> family file, so that enabling a class
imports its own family only), and the verification in `cp_hooks/verify/models/cogview.py` (tiny config and cases,
its `ENTRIES`). The registry finds the plan through the index, the catalogue finds the entries, and the tests and
this table read both.

1. **Read `forward`.** `patch_embed` returns the image and the text streams separately; `rope` returns the 2-D
   rotary table `(cos, sin)` for the whole image grid, one row per image token; each block's processor
   concatenates [text, image] and rotates the rows after the text; `proj_out` is the last per-token layer before
   the unpatchify reshape. So: split both outputs of `patch_embed`, split both outputs of `rope` like the image,
   gather at `proj_out`:

   ```python
   COGVIEW4 = {
       "patch_embed": {0: ContextParallelInput(1, 3, split_output=True), 1: ContextParallelInput(1, 3, split_output=True)},
       "rope": {0: ContextParallelInput(0, 2, split_output=True), 1: ContextParallelInput(0, 2, split_output=True)},
       "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
   }
   PLANS = {"CogView4Transformer2DModel": PlanDeclaration(plan=COGVIEW4)}
   ```

   and `"CogView4Transformer2DModel": "cogview"` in `BUILTIN_FAMILIES` (`cp_hooks/plans/index.py`).
2. **Read the pipeline** (`pipeline_cogview4.py`) for the inputs: GLM text padded to a multiple of 16, one
   call per guidance branch, size conditions per sample, no mask; CogView4-Control doubles the input channels.
   Write a tiny config (1 layer, 4 heads of 8) and a builder `(config, generator) -> forward kwargs` that makes
   exactly those inputs, one case per way the pipeline calls the model (`"t2i"`, `"control"`).
3. **Declare the entry** (its plan comes from the registry) with what it cannot serve (here: the optional
   query x key `attention_mask`, which cp_hooks refuses by itself, so only a note):
   `ENTRIES = [ModelEntry("CogView4Transformer2DModel", config=CONFIG, cases={"t2i": build, "control": build},
   case_configs={"control": dict(in_channels=8)}, note="...")]`. A configuration the plan cannot serve goes in
   its declaration, `PlanDeclaration(plan=..., unsupported=(UnsupportedConfig(...),))`; a class that cannot be
   served at all in the verification file's `UNSUPPORTED = {name: reason}`; zero-initialised gates that would
   hide layers from the check in the entry's `redraw=("*.gate*",)`.
4. **Verify**: `python -m pytest -q tests/test_catalogue.py tests/test_checker_backward.py -k CogView4` runs every
   case in Ulysses 2, ring 2 (both rotations) and the 2 x 2 hybrid, outputs and gradients, against one process.
   For a model outside diffusers, keep one file with its `ModelEntry` (giving `plan=`) anywhere and run
   `torchrun --nproc_per_node 2 -m cp_hooks check my_family:MyModel --entry my_family:ENTRIES --backward`.
5. **Regenerate this table**: `python -m cp_hooks table --readme docs/models.md`.
"""

"""Plans: what happens at which module of a model, as data.

- `specs`: the spec dataclasses (`ContextParallelInput`, `ContextParallelOutput`, `LocalAttention`,
  `ContextParallelProcessor`, `UnsupportedConfig`), `PlanDeclaration` and `normalize_plan`;
- `registry`: one mapping, class name -> declaration, with the user's `register_plan` and the built-in families
  loaded lazily through `index` (class name -> family file);
- `resolve`: plan names (with `*` and negative indices) to a model's modules;
- `pipelines`: which components of a diffusers pipeline have a plan;
- one file per model family (`flux.py`, `wan.py`, ...): its `PLANS`, the reasons behind each plan in its
  docstring, and any processor a plan needs in production. What verifies them is in `cp_hooks.verify.models`.

Nothing here imports a family file eagerly: enabling a class imports its family only.
"""

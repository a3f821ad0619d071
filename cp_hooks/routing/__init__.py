"""Routing: the only code that patches torch or diffusers, each patch owned by the model that took it.

Outside the enabled model (process-wide, reference-counted, released by `disable_parallelism` or when the model
is garbage-collected — `patches.PatchLease`):

- `torch.nn.functional.scaled_dot_product_attention` -> the SDPA guard (`sdpa.py`);
- `dispatch_attention_fn` in each diffusers module that defines a routed processor's `__call__` -> the
  dispatch wrapper (`diffusers_dispatch.py`);
- `FBCHeadBlockHook._should_compute_remaining_blocks` and `SeaCacheSharedState.resolve_gate` -> the
  group-reduced First Block Cache decision and the SeaCache refusal (`diffusers_caches.py`).

On the enabled model itself (undone by `disable_parallelism`, gone with the model):

- each attention processor's `_parallel_config` -> a `CPHandle` (`diffusers_dispatch.ProcessorRouting`);
- the plan's own processors (`ContextParallelProcessor`) swapped in (`processor_swap.py`);
- the SDPA router, a torch-function mode entered during the model's forward where the guard cannot see
  every call (`sdpa.SDPARouter`, chosen by `hook.AttentionRoutingHook`);
- for sequential guidance, the model's class and `cache_context` (`compat/sequential_cfg.py`: diffusers
  composition, kept with the other compositions).

On an enabled VAE (`vae/api.py`; undone by `disable_vae_parallelism`, gone with the VAE): instance attributes
that shadow `forward` of its convolutions, group norms and Wan attention blocks and the VAE's `_decode` /
`_encode`, and a slab processor on its mid-block attention. These replace a `forward` (the one place cp_hooks
does): a conv must compute its edge rows from halo rows, which hooks around an unchanged `forward` cannot do
without copying the slab.

Which calls are routed is decided by the forward context (`cp_hooks.forward.context.attention_runtime`): only
the enabled model's own modules. docs/architecture.md, "Attention routing".
"""

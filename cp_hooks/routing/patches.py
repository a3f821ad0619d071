"""Every patch cp_hooks makes outside the model it enables, owned by that model.

What an enabled model may hold (each reference-counted over the models that hold it):

- the SDPA guard, `torch.nn.functional.scaled_dot_product_attention` (`routing/sdpa.py`): SDPA calls of the
  model's modules become context-parallel;
- `dispatch_attention_fn` in the module that defines a processor's `__call__` (`routing/diffusers_dispatch.py`):
  diffusers processors' calls that carry the model's handle become context-parallel;
- `FBCHeadBlockHook._should_compute_remaining_blocks`, `SeaCacheSharedState.resolve_gate`
  (`routing/diffusers_caches.py`): cache decisions on metrics reduced over the group; SeaCache refused.

What it changes on itself (undone by `disable_parallelism`, gone with the model): torch module hooks
(`forward/hooks.py`), its processors' `_parallel_config` and the plan's own processors (`routing/`), and for
sequential guidance its class and `cache_context` (`compat/sequential_cfg.py`).

A `PatchLease` records what one enabling took. `disable_parallelism` releases it; so does the model being
garbage-collected without a disable (a `weakref.finalize` on the model), so no patch outlives its model.
"""

from __future__ import annotations

import weakref

from cp_hooks.routing import diffusers_caches, diffusers_dispatch, sdpa


class PatchLease:
    """The process-wide patches one enabled model holds, released exactly once.

    Args:
        model: the enabled model; held weakly (its collection releases the lease).
    """

    def __init__(self, model) -> None:
        self._releases: list = []
        # The finalizer holds the list of releases, never the model.
        self._finalizer = weakref.finalize(model, _release_all, self._releases)

    def acquire_sdpa_guard(self) -> None:
        """Take the SDPA guard (installed by the first holder)."""
        sdpa.acquire_guard()
        self._releases.append(sdpa.release_guard)

    def patch_dispatch(self, module_name: str) -> bool:
        """Swap `dispatch_attention_fn` of the Python module `module_name`; False where it has none."""
        if not diffusers_dispatch.patch_module(module_name):
            return False
        self._releases.append(lambda: diffusers_dispatch.unpatch_module(module_name))
        return True

    def acquire_cache_patches(self) -> None:
        """Take diffusers' cache-hook patches (installed by the first holder)."""
        diffusers_caches.acquire()
        self._releases.append(diffusers_caches.release)

    @property
    def held(self) -> int:
        """How many acquisitions are held (0 once released)."""
        return len(self._releases)

    def release(self) -> None:
        """Release everything this lease took, in reverse order; a second call does nothing."""
        self._finalizer()


def _release_all(releases: list) -> None:
    while releases:
        releases.pop()()

"""Patches of diffusers' cache hooks, while at least one model is enabled (what they compute: `compat/caches.py`).

* `FBCHeadBlockHook._should_compute_remaining_blocks` (First Block Cache): replaced by the decision on the metric
  reduced over the enabled model's group, so every rank decides as one process would.
* `SeaCacheSharedState.resolve_gate` (SeaCache): replaced by a refusal inside enabled forwards (its metric needs
  the whole latent grid).

Both are methods of diffusers' classes, replaced on the class so that a cache enabled before or after
`enable_parallelism` is covered; outside an enabled forward the replacements call diffusers' originals.
Reference-counted over the enabled models (`PatchLease.acquire_cache_patches`): the last release puts the
originals back.
"""

from __future__ import annotations

import threading

from cp_hooks.compat.caches import group_reduced_fbc_decision, sea_cache_refusal

_lock = threading.Lock()
_users = 0
_installed: list = []  # (class, attribute, original) of the patches in place


def _fbc_hook_class():
    try:
        from diffusers.hooks.first_block_cache import FBCHeadBlockHook
    except Exception:  # no diffusers, or a version without First Block Cache: nothing to patch
        return None
    return FBCHeadBlockHook if hasattr(FBCHeadBlockHook, "_should_compute_remaining_blocks") else None


def _sea_cache_hook_class():
    # Every SeaCache hook (root or leader block) decides through its shared state's `resolve_gate`.
    try:
        from diffusers.hooks.sea_cache import SeaCacheSharedState
    except Exception:  # no diffusers, or a version without SeaCache
        return None
    return SeaCacheSharedState if hasattr(SeaCacheSharedState, "resolve_gate") else None


def _patch(cls, attribute: str, make_replacement) -> None:
    if cls is None:
        return
    original = cls.__dict__[attribute]
    setattr(cls, attribute, make_replacement(original))
    _installed.append((cls, attribute, original))


def acquire() -> None:
    """One more enabled model needs the patches; the first installs them."""
    global _users
    with _lock:
        _users += 1
        if _users == 1:
            _patch(_fbc_hook_class(), "_should_compute_remaining_blocks", group_reduced_fbc_decision)
            _patch(_sea_cache_hook_class(), "resolve_gate", sea_cache_refusal)


def release() -> None:
    """Ends one `acquire()`; the last one puts diffusers' methods back."""
    global _users
    with _lock:
        _users -= 1
        if _users == 0:
            while _installed:
                cls, attribute, original = _installed.pop()
                setattr(cls, attribute, original)


def is_patched() -> bool:
    """True while diffusers' First Block Cache metric is replaced by the group-reduced one."""
    cls = _fbc_hook_class()
    return cls is not None and getattr(
        cls.__dict__.get("_should_compute_remaining_blocks"), "_cp_hooks_global_metric", False
    )

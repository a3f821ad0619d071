"""The pipeline side of VAE parallelism: what `enable_parallelism(pipe, config, vae=...)` does with `pipe.vae`.

`vae=None` (the default): split the VAE over all of the config's ranks (cfg groups included: after the
transformer every one of them holds the same latents) when its class is supported, else leave it whole and
log why. `vae=True`: the same, but an unsupported VAE raises before anything is enabled. `vae=False`: leave it.
"""

from __future__ import annotations

import logging

from cp_hooks.vae.api import UnsupportedVAEError, disable_vae_parallelism, enable_vae_parallelism, supports_vae

logger = logging.getLogger("cp_hooks.vae")

_PIPELINE_VAE = "_cp_hooks_vae_enabled"  # on a pipeline: the VAE that enable_parallelism split


def check_pipeline_vae(pipe, vae: bool | None) -> None:
    """Raise before any collective when `vae=True` asks for a VAE that cannot be split.

    Raises:
        UnsupportedVAEError: `vae` is True and the pipeline has no VAE, or one `supports_vae` refuses.
    """
    if vae is not True:
        return
    module = getattr(pipe, "vae", None)
    if module is None:
        raise UnsupportedVAEError(f"vae=True, but {type(pipe).__name__} has no `vae` component")
    reason = supports_vae(module)
    if reason is not True:
        raise UnsupportedVAEError(f"vae=True: cp_hooks cannot split this VAE exactly: {reason}")


def enable_pipeline_vae(pipe, config, vae: bool | None) -> str:
    """Split `pipe.vae` over the config's ranks as `vae` says (see the module docstring).

    Args:
        pipe: the pipeline, its transformers already enabled with `config` (so `config` is set up).
        config: the cp_hooks config.
        vae: None (split when supported), True (split; checked by `check_pipeline_vae`) or False.

    Returns:
        One line saying what happened to the VAE (also logged).
    """
    module = getattr(pipe, "vae", None)
    if vae is False or module is None:
        return "VAE: left whole" + (" (vae=False)" if vae is False else " (no vae component)")
    reason = supports_vae(module)
    if reason is not True:
        message = f"VAE: {type(module).__name__} left whole — {reason}"
        logger.info("cp_hooks: %s", message)
        return message
    group = config.runtime.world_group
    enable_vae_parallelism(module, group=group)
    pipe.__dict__[_PIPELINE_VAE] = module
    message = f"VAE: {type(module).__name__} decode/encode split by rows over {group.size()} ranks"
    logger.info("cp_hooks: %s", message)
    return message


def disable_pipeline_vae(pipe) -> None:
    """Undo `enable_pipeline_vae` (nothing when it did not split the VAE)."""
    module = pipe.__dict__.pop(_PIPELINE_VAE, None)
    if module is not None:
        disable_vae_parallelism(module)

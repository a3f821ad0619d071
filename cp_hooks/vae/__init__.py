"""Patch-parallel VAE decode and encode: each rank computes its rows of the image, exactly (docs/vae.md).

Public: `enable_vae_parallelism`, `disable_vae_parallelism`, `supports_vae`, `is_vae_parallel`.
"""

from cp_hooks.vae.api import (
    SUPPORTED_CLASSES,
    UnsupportedVAEError,
    disable_vae_parallelism,
    enable_vae_parallelism,
    is_vae_parallel,
    supports_vae,
)

__all__ = [
    "enable_vae_parallelism",
    "disable_vae_parallelism",
    "supports_vae",
    "is_vae_parallel",
    "UnsupportedVAEError",
    "SUPPORTED_CLASSES",
]

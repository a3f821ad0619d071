"""Context-parallel attention: local kernels with LSE, merge, Ulysses, ring and hybrid."""

from cp_hooks.attention.api import context_parallel_attention

__all__ = ["context_parallel_attention"]

"""cp_hooks: context parallelism for diffusion transformers, through hooks.

from cp_hooks import ContextParallelConfig, enable_parallelism
enable_parallelism(transformer, ContextParallelConfig(ulysses_degree=2))
"""

from cp_hooks.attention import context_parallel_attention
from cp_hooks.comm import comm_stats
from cp_hooks.config import ContextParallelConfig
from cp_hooks.launch import init_distributed, shutdown_distributed
from cp_hooks.parallel import disable_parallelism, enable_parallelism, is_parallelized
from cp_hooks.plans.registry import get_plan, register_plan
from cp_hooks.plans.specs import (
    ContextParallelInput,
    ContextParallelOutput,
    ContextParallelProcessor,
    LocalAttention,
    UnsupportedConfig,
)
from cp_hooks.training import reduce_gradients
from cp_hooks.vae import disable_vae_parallelism, enable_vae_parallelism

__version__ = "0.1.0"

__all__ = [
    "ContextParallelConfig",
    "ContextParallelInput",
    "ContextParallelOutput",
    "ContextParallelProcessor",
    "LocalAttention",
    "UnsupportedConfig",
    "comm_stats",
    "context_parallel_attention",
    "disable_parallelism",
    "disable_vae_parallelism",
    "enable_parallelism",
    "enable_vae_parallelism",
    "get_plan",
    "init_distributed",
    "is_parallelized",
    "reduce_gradients",
    "register_plan",
    "shutdown_distributed",
]

"""cp_hooks: context parallelism for diffusion transformers, through hooks.

    from cp_hooks import ContextParallelConfig, enable_parallelism
    enable_parallelism(transformer, ContextParallelConfig(ulysses_degree=2))
"""

from .attention import context_parallel_attention
from .comm import comm_stats
from .config import ContextParallelConfig
from .launch import init_distributed, shutdown_distributed
from .parallel import disable_parallelism, enable_parallelism, is_parallelized
from .plan import (ContextParallelInput, ContextParallelOutput, ContextParallelProcessor, LocalAttention,
                   UnsupportedConfig, get_plan, register_plan)
from .training import reduce_gradients

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
    "enable_parallelism",
    "get_plan",
    "init_distributed",
    "is_parallelized",
    "reduce_gradients",
    "register_plan",
    "shutdown_distributed",
]

"""Route `torch.nn.functional.scaled_dot_product_attention` calls made inside a parallelized model.

For models that call SDPA directly (plain `nn.Module`s, and diffusers processors that do not go through
`dispatch_attention_fn`), a torch-function mode is active during the model's forward. Every SDPA call in
it is treated as self-attention over sequence-sharded tensors, except inside modules the plan marks
`LocalAttention()` and inside cp_hooks' own kernels.

Under torch.compile a mode that sees every torch call is traced with the forward, and dynamo cannot trace
some of what it then sees (e.g. `Tensor.unflatten`'s `super()` call): such models fail loudly with
`fullgraph=True` (docs/architecture.md, "Compile boundary"). Replacing `F.scaled_dot_product_attention`
instead was tried and is wrong under compile: dynamo maps the name to torch's own kernel and never calls
the replacement, so attention silently ran locally.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..attention import routing
from ..attention.api import context_parallel_attention
from ..hooks import ModelHook
from ..runtime import ContextParallelRuntime

_SDPA = F.scaled_dot_product_attention


class SDPARouter(TorchFunctionMode):
    """Sends SDPA calls to `context_parallel_attention` (layout (B, H, S, D) in and out, as SDPA)."""

    def __init__(self, runtime: ContextParallelRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not _SDPA or routing.is_local():
            return func(*args, **kwargs)
        return _route(self.runtime, *args, **kwargs)


def _route(runtime, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    if enable_gqa and k.shape[2] != q.shape[2]:
        groups = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
    out = context_parallel_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, config=runtime)
    return out.transpose(1, 2)


class SDPARouterHook(ModelHook):
    """Activates `SDPARouter` around the root model's forward (exited even if the forward raises)."""

    def __init__(self, runtime: ContextParallelRuntime | None = None) -> None:
        self.runtime = runtime
        self._active: list = []  # a stack: an enabled model may run inside another's forward

    def enter(self, module) -> None:
        mode = SDPARouter(self.runtime)
        mode.__enter__()
        self._active.append(mode)

    def exit(self, module) -> None:
        self._active.pop().__exit__(None, None, None)


class LocalAttentionHook(ModelHook):
    """Runs the module's attention calls locally (replicated keys: no communication)."""

    def enter(self, module) -> None:
        routing.enter_local()

    def exit(self, module) -> None:
        routing.exit_local()

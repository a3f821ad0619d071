"""The hook on an enabled model that routes its attention calls, whatever sets them up after enable.

Before each forward it routes attention processors set since the last forward (`ProcessorRouting.sync`: one
identity comparison per attention module when nothing changed) and decides how SDPA calls made outside
diffusers' dispatch are routed: through the cheap SDPA guard, or through the SDPA router mode where the guard
would not see them (`sdpa.py`). Which calls are the model's own is the forward context's business
(`cp_hooks.forward.context`). docs/architecture.md, "Attention routing".
"""

from __future__ import annotations

import torch.nn as nn

from cp_hooks.forward.hooks import ModelHook
from cp_hooks.routing import sdpa
from cp_hooks.routing.diffusers_dispatch import ProcessorRouting
from cp_hooks.routing.patches import PatchLease
from cp_hooks.runtime import ContextParallelRuntime


class AttentionRoutingHook(ModelHook):
    """Routes the model's attention: diffusers processors (also ones set after enable) and SDPA calls.

    Built before any collective; `install(runtime, lease)` marks the processors and takes the SDPA guard under
    the model's patch lease, `remove()` undoes both. The guard routes every `F.scaled_dot_product_attention`
    call of the model's modules; the router mode is used where the guard is not enough (see `needs_router`).
    """

    # Runs as plain Python under torch.compile too: processors set after compiling are routed before the
    # (re)traced forward reads them, and a traced sync would guard on every attention module.
    eager = True

    def __init__(self, model: nn.Module) -> None:
        self.runtime: ContextParallelRuntime | None = None
        self.processors = ProcessorRouting(model)
        self.use_router = False
        self._active: list = []  # a stack: an enabled model may run inside another's forward

    def install(self, runtime: ContextParallelRuntime, lease: PatchLease) -> None:
        """Mark the processors as context-parallel and take the SDPA guard (after the config's setup)."""
        self.runtime = runtime
        self.processors.install(runtime, lease)
        self.use_router = self.needs_router()
        lease.acquire_sdpa_guard()

    def remove(self) -> None:
        """Undo the processors' marks (the lease's patches are released by its owner)."""
        self.processors.restore()

    def needs_router(self) -> bool:
        """Whether SDPA calls need the torch-function mode, for the processors the model holds now.

        Only when the code of a submodule or processor holds torch's SDPA under its own name, which the guard
        does not see. Processors that call `F.scaled_dot_product_attention` themselves (not through diffusers'
        dispatch) are routed by the guard: it replaces that attribute. (The mode sees every torch call of the
        forward, a few microseconds each, and dynamo cannot trace some tensor methods under it with
        fullgraph=True, e.g. HunyuanVideo's `unflatten`.)
        """
        processors = [p for p in self.processors.processors if p is not None]
        # The classes' code of every submodule (listed again when modules were added) and processor.
        return sdpa.sdpa_bound_elsewhere(self.processors.modules + processors) is not None

    def enter(self, module) -> None:
        if self.processors.sync():  # a processor was set since the last forward
            self.use_router = self.needs_router()
        # The guard routes calls through the attribute F.scaled_dot_product_attention; the mode, where used,
        # the others (a call the guard routed reaches the mode only inside cp_hooks' kernels: local).
        if self.use_router:
            mode = sdpa.SDPARouter()
            mode.__enter__()
            self._active.append(mode)
        else:
            self._active.append(None)

    def exit(self, module) -> None:
        mode = self._active.pop()
        if mode is not None:
            mode.__exit__(None, None, None)

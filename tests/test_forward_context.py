"""The forward context: only the enabled model's own modules are routed; no patch outlives its model.

An SDPA call is context-parallel only when a module of the enabled model makes it (cp_hooks/forward/context.py).
Checked, each against the same modules run in one process (fp32, relative 1e-5), with negative controls that
force the old behaviour (route every SDPA call while an enabled forward or backward runs) and see it fail:

* a module that is not part of the enabled model, called from a hook inside the enabled forward;
* a second model with checkpointed blocks, trained in the same loss: its blocks are recomputed in the enabled
  model's backward;
* another thread calling attention while the enabled model's forward and backward run.

And the lifetime of the patches (cp_hooks/routing/patches.py): a model collected without `disable_parallelism`
leaves `F.scaled_dot_product_attention`, diffusers' dispatch and the cache hooks as they were; enabling and
disabling one model never recompiles another, already compiled one (dynamo's counters).
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint

import tiny_models
from cp_hooks import (
    ContextParallelInput,
    ContextParallelOutput,
    disable_parallelism,
    enable_parallelism,
    reduce_gradients,
)
from cp_hooks.forward.context import ModelContext
from cp_testing import FP32_TOL, make_config, rel_err

MODES = [(1, 2), (2, 1)]  # (ring, ulysses)


class Block(nn.Module):
    def __init__(self, width: int = 16, heads: int = 4, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x):
        b, s, w = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return x + out.transpose(1, 2).reshape(b, s, w)


class Model(nn.Module):
    """Two attention blocks, optionally checkpointed, and an output projection. `causal`: a causal text encoder
    (as HunyuanVideo's Llama): the modules that are not enabled here are such encoders, whose whole input on
    every rank would otherwise hide a wrong routing (attention over duplicated keys is the same attention)."""

    def __init__(self, checkpointed: bool = False, causal: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(causal=causal) for _ in range(2))
        self.proj_out = nn.Linear(16, 16)
        self.checkpointed = checkpointed

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint.checkpoint(block, x, use_reentrant=False) if self.checkpointed else block(x)
        return self.proj_out(x)


PLAN = {"": {"x": ContextParallelInput(split_dim=1, expected_dims=3)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3)}


def _inputs(seed: int, tokens: int = 12) -> torch.Tensor:
    return torch.randn(1, tokens, 16, generator=torch.Generator().manual_seed(seed))


class _RouteEveryCall:
    """Negative control: the old rule, every SDPA call routed while an enabled forward or backward runs."""

    def __enter__(self):
        self._owns = ModelContext.owns
        ModelContext.owns = lambda self, module: True
        return self

    def __exit__(self, *exc):
        ModelContext.owns = self._owns


def module_called_from_a_hook(ring: int, ulysses: int) -> dict:
    """A text encoder (not enabled) called from a forward hook of the enabled model's first block."""
    torch.manual_seed(0)
    model, encoder = Model(), Model(causal=True)
    text = _inputs(1, tokens=10)  # whole on every rank: the encoder is not context-parallel
    with torch.no_grad():
        reference = encoder(text)
    errors = {}
    for case in ("owned modules only", "control: every call routed"):
        seen = []
        handle = model.blocks[0].register_forward_hook(lambda *_: seen.append(encoder(text)))
        enable_parallelism(model, make_config(ring, ulysses), plan=PLAN)
        try:
            with torch.no_grad(), (_RouteEveryCall() if case.startswith("control") else _nothing()):
                model(_inputs(0))
            errors[case] = rel_err(seen[0], reference)
        except Exception:  # the old rule may also refuse the encoder's causal attention
            errors[case] = float("inf")
        finally:
            disable_parallelism(model)
            handle.remove()
    return errors


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def checkpointed_second_model(ring: int, ulysses: int) -> dict:
    """loss = enabled(x) + other(y), the other model's blocks checkpointed: recomputed in the same backward."""
    torch.manual_seed(0)
    model, other = Model(checkpointed=True), Model(checkpointed=True, causal=True)
    x, y = _inputs(0), _inputs(1, tokens=10)

    def gradients(config):
        for m in (model, other):
            m.zero_grad()
        # The other model runs first, so that the backward reaches its recomputed blocks after the enabled
        # model's output gradient (later nodes first), inside the enabled model's backward.
        other_loss = other(y).square().sum()
        loss = model(x).square().sum() + other_loss
        loss.backward()
        if config is not None:
            reduce_gradients(model, config)
        return {f"model.{n}": p.grad.clone() for n, p in model.named_parameters()} | \
               {f"other.{n}": p.grad.clone() for n, p in other.named_parameters()}

    reference = gradients(None)
    errors = {}
    for case in ("owned modules only", "control: every call routed"):
        config = make_config(ring, ulysses)
        enable_parallelism(model, config, plan=PLAN)
        try:
            with _RouteEveryCall() if case.startswith("control") else _nothing():
                try:
                    grads = gradients(config)
                    errors[case] = max(rel_err(grads[n], reference[n]) for n in reference if n.startswith("other"))
                    errors[case + " (enabled model)"] = max(rel_err(grads[n], reference[n])
                                                            for n in reference if n.startswith("model"))
                except Exception:  # the old rule may also fail the checkpoint's recomputation check
                    if not case.startswith("control"):
                        raise
                    errors[case] = float("inf")
        finally:
            disable_parallelism(model)
    return errors


def another_thread(ring: int, ulysses: int) -> dict:
    """A thread runs a module that is not enabled while the enabled model's forward, then backward, runs."""
    torch.manual_seed(0)
    model, encoder = Model(), Model(causal=True)
    text = _inputs(1, tokens=10)
    with torch.no_grad():
        reference = encoder(text)
    enable_parallelism(model, make_config(ring, ulysses), plan=PLAN)
    results: dict[str, torch.Tensor] = {}

    def run_in_thread(label: str) -> None:
        # Called from inside the enabled forward / backward; the other thread computes while it waits.
        def work():
            with torch.no_grad():
                results[label] = encoder(text)
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=60)

    handle = model.blocks[1].register_forward_hook(lambda *_: run_in_thread("during forward"))
    try:
        out = model(_inputs(0))
        out.register_hook(lambda grad: run_in_thread("during backward") or grad)
        out.square().sum().backward()
    finally:
        handle.remove()
        disable_parallelism(model)
    return {label: rel_err(value, reference) for label, value in results.items()}


@pytest.mark.parametrize("fn", [module_called_from_a_hook, checkpointed_second_model, another_thread],
                         ids=["called from a hook", "checkpointed second model", "another thread"])
def test_modules_outside_the_enabled_model_are_not_routed(pool, fn):
    for ring, ulysses in MODES:
        per_rank = pool(2).run(fn, ring, ulysses, timeout=120)
        for case in per_rank[0]:
            worst = max(errors[case] for errors in per_rank)
            if case.startswith("control") and "enabled model" not in case:
                # (on some rank: with a causal encoder, rank 0's queries see only its own copy of the keys)
                assert worst > 100 * FP32_TOL, f"ring {ring} ulysses {ulysses}: the control should fail ({worst:.2e})"
            else:
                assert worst <= FP32_TOL, f"ring {ring} ulysses {ulysses} {case}: {worst:.2e}"


def collected_without_disable() -> dict:
    """Enable a diffusers model (guard, dispatch swap, cache patches), drop it without disable, collect."""
    import diffusers.models.transformers.transformer_flux as flux_module
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    dispatch = flux_module.dispatch_attention_fn
    fbc = FBCHeadBlockHook.__dict__["_should_compute_remaining_blocks"]
    sdpa = F.scaled_dot_product_attention
    model, inputs = tiny_models.tiny_flux()
    enable_parallelism(model, make_config(1, 2))
    with torch.no_grad():
        model(**inputs)
    patched = (F.scaled_dot_product_attention is not sdpa, flux_module.dispatch_attention_fn is not dispatch,
               FBCHeadBlockHook.__dict__["_should_compute_remaining_blocks"] is not fbc)
    del model, inputs
    gc.collect()
    restored = (F.scaled_dot_product_attention is sdpa, flux_module.dispatch_attention_fn is dispatch,
                FBCHeadBlockHook.__dict__["_should_compute_remaining_blocks"] is fbc)
    return {"patched while enabled": patched, "restored after collection": restored,
            "torch's own SDPA": F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention}


def test_no_patch_outlives_its_model(pool):
    for result in pool(2).run(collected_without_disable, timeout=120):
        assert result["patched while enabled"] == (True, True, True)
        assert result["restored after collection"] == (True, True, True)
        assert result["torch's own SDPA"]


def no_recompile_of_another_model() -> int:
    """Model A enabled and compiled (fullgraph); enabling, running and disabling B must not recompile A."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    a, b = Model(), Model()
    enable_parallelism(a, make_config(1, 2), plan=PLAN)
    compiled = torch.compile(a, fullgraph=True)
    x = _inputs(0)
    try:
        with torch.no_grad():
            expected = compiled(x)
            compiled(_inputs(2))  # a second call: nothing left to compile
            frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            with torch._dynamo.config.patch(error_on_recompile=True):
                enable_parallelism(b, make_config(1, 2), plan=PLAN)
                b(x)
                out = compiled(x)
                disable_parallelism(b)
                out_after = compiled(x)
            assert torch.equal(out, expected) and torch.equal(out_after, expected)
            return torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames
    finally:
        disable_parallelism(a)
        disable_parallelism(b)
        torch._dynamo.reset()


def test_enabling_another_model_does_not_recompile(pool):
    for new_graphs in pool(2).run(no_recompile_of_another_model, timeout=300):
        assert new_graphs == 0

"""Attention set up or called where enable_parallelism did not see it, against one process (fp32, 1e-5).

- processors set after enable (`set_attn_processor`): routed before the next forward;
- `F.scaled_dot_product_attention` called by a module that is not a diffusers Attention, in a model whose
  processors all go through diffusers' dispatch (the SDPA guard), or through a name bound to torch's SDPA
  (the SDPA router);
- both under `torch.compile(model, fullgraph=True)`;
- the `dispatch_attention_fn` wrapper forwards any signature (unit tests, one process).

Each parallel case also runs a negative control: with the mechanism switched off the result is wrong, so the
case does test it.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.forward import context as routing
from cp_hooks.routing import diffusers_dispatch as diffusers_attention
from cp_hooks.routing import sdpa
from cp_testing import FP32_TOL, make_config, rel_err

MODES = [(1, 2), (2, 1)]  # (ring, ulysses): Ulysses 2, ring 2


def _flux_processor():
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    return FluxAttnProcessor


def _subclass_processor():
    # A processor class defined outside diffusers whose __call__ is diffusers' (its dispatch is in diffusers).
    cls = type("ProcessorSubclass", (_flux_processor(),), {"__module__": __name__})
    return cls()


class _PlainSDPAProcessor:
    """A Flux processor that calls F.scaled_dot_product_attention itself: no parallel config, no dispatch."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections, apply_rotary_emb

        q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k, v = (t.unflatten(-1, (attn.heads, -1)) for t in (q, k, v))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            eq, ek, ev = (t.unflatten(-1, (attn.heads, -1)) for t in (eq, ek, ev))
            q, k = torch.cat([attn.norm_added_q(eq), q], 1), torch.cat([attn.norm_added_k(ek), k], 1)
            v = torch.cat([ev, v], 1)
        if image_rotary_emb is not None:
            q, k = (apply_rotary_emb(t, image_rotary_emb, sequence_dim=1) for t in (q, k))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2)
        if encoder_hidden_states is None:
            return out
        text_len = encoder_hidden_states.shape[1]
        text, image = out.split_with_sizes([text_len, out.shape[1] - text_len], 1)
        return attn.to_out[1](attn.to_out[0](image)), attn.to_add_out(text)


class TokenSelfAttention(nn.Module):
    """Self-attention over the image tokens before Flux's `norm_out`, through `F.scaled_dot_product_attention`.

    Not a diffusers Attention: no processor routes it. `local_only` runs it on this rank's tokens only (what
    cp_hooks did before the guard), for the negative control.
    """

    def __init__(self, inner: nn.Module, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.inner, self.heads, self.local_only = inner, heads, False
        self.qkv = nn.Linear(dim, 3 * dim)

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x, *args, **kwargs):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        if self.local_only:
            with routing.run_locally():
                out = self.attend(q, k, v)
        else:
            out = self.attend(q, k, v)
        return self.inner(x + out.transpose(1, 2).flatten(2), *args, **kwargs)


def _bound_attention_class():
    """TokenSelfAttention whose Python module holds torch's SDPA under its own name (bypassing the attribute)."""
    module = types.ModuleType("cp_hooks_test_bound_sdpa")
    module.attention = torch._C._nn.scaled_dot_product_attention  # torch's SDPA itself, not the attribute
    sys.modules[module.__name__] = module
    return type("BoundTokenSelfAttention", (TokenSelfAttention,),
                {"__module__": module.__name__, "attend": lambda self, q, k, v: module.attention(q, k, v)})


def _routing_hook(model):
    from cp_hooks.forward.hooks import HookRegistry

    return HookRegistry.of(model).get("cp_hooks.attention_routing")


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def processors_after_enable(ring: int, ulysses: int) -> dict:
    errors = {}
    config = make_config(ring, ulysses)
    model, inputs = tiny_models.tiny_flux()
    reference = _forward(model, inputs)
    original = model.attn_processors
    enable_parallelism(model, config)
    hook = _routing_hook(model)
    assert not hook.use_router  # every processor goes through diffusers' dispatch
    for name, make in [("FluxAttnProcessor", lambda: _flux_processor()()), ("subclass", _subclass_processor),
                       ("plain SDPA", _PlainSDPAProcessor)]:
        model.set_attn_processor(make())
        errors[name] = rel_err(_forward(model, inputs), reference)
        assert not hook.use_router, name  # a processor calling F.scaled_dot_product_attention: the guard routes it
    # Negative control: a new processor that is not routed attends to its own shard only.
    model.set_attn_processor(_flux_processor()())
    hook.processors.sync = lambda: False
    try:
        errors["control: not routed"] = rel_err(_forward(model, inputs), reference)
    finally:
        del hook.processors.sync
    errors["FluxAttnProcessor again"] = rel_err(_forward(model, inputs), reference)
    processors = list(model.attn_processors.values())
    disable_parallelism(model)
    # Everything restored: no handle left on any processor routed, no dispatch function swapped.
    assert all("_parallel_config" not in p.__dict__ for p in processors)
    assert not diffusers_attention._patched_modules
    model.set_attn_processor(original)
    assert torch.equal(_forward(model, inputs), reference)
    return errors


def sdpa_outside_processors(ring: int, ulysses: int) -> dict:
    errors = {}
    config = make_config(ring, ulysses)
    for name, cls in [("F attribute (guard)", TokenSelfAttention), ("bound name (router)", _bound_attention_class())]:
        model, inputs = tiny_models.tiny_flux()
        torch.manual_seed(3)
        model.norm_out = cls(model.norm_out, model.inner_dim)
        reference = _forward(model, inputs)
        enable_parallelism(model, config)
        try:
            assert _routing_hook(model).use_router == (cls is not TokenSelfAttention), name
            assert sdpa.guard_installed()
            errors[name] = rel_err(_forward(model, inputs), reference)
            model.norm_out.local_only = True
            errors[f"control: {name}, local only"] = rel_err(_forward(model, inputs), reference)
        finally:
            disable_parallelism(model)
        model.norm_out.local_only = False
        assert torch.equal(_forward(model, inputs), reference)
    assert not sdpa.guard_installed() and F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    return errors


def modules_added_after_enable(ring: int, ulysses: int) -> dict:
    """An attention module added after enable (a block appended to the model's ModuleList, as adapters that insert
    layers do) is routed before the next forward: torch's module-registration hook makes the routing list the
    model's attention modules again."""
    import copy

    errors = {}
    model, inputs = tiny_models.tiny_flux()
    extra, _ = tiny_models.tiny_flux(seed=5)  # a block with other weights
    block = extra.transformer_blocks[0]
    plain = copy.deepcopy(model)
    plain.transformer_blocks.append(copy.deepcopy(block))
    reference = _forward(plain, inputs)
    for case in ("block appended after enable", "control: registration not seen"):
        model, inputs = tiny_models.tiny_flux()
        enable_parallelism(model, make_config(ring, ulysses))
        try:
            _forward(model, inputs)  # a forward before the change: the attention modules are listed
            model.transformer_blocks.append(copy.deepcopy(block))
            if case.startswith("control"):  # as if nothing had been registered: the new block attends locally
                _routing_hook(model).processors._registrations = routing.registration_count()
            errors[case] = rel_err(_forward(model, inputs), reference)
        finally:
            disable_parallelism(model)
    return errors


@pytest.mark.parametrize("fn", [processors_after_enable, sdpa_outside_processors, modules_added_after_enable],
                         ids=["set_attn_processor_after_enable", "sdpa_outside_processors",
                              "modules_added_after_enable"])
def test_attention_set_or_called_outside_enable(pool, fn):
    for ring, ulysses in MODES:
        for errors in pool(2).run(fn, ring, ulysses, timeout=120):
            for case, err in errors.items():
                if case.startswith("control"):
                    assert err > 100 * FP32_TOL, f"ring {ring} ulysses {ulysses} {case}: {err:.2e} (should be wrong)"
                else:
                    assert err <= FP32_TOL, f"ring {ring} ulysses {ulysses} {case}: {err:.2e}"


def compiled_routing(ring: int, ulysses: int) -> dict:
    """torch.compile(model, fullgraph=True): the guard is traced, and a processor set after compiling is routed."""
    torch._dynamo.reset()
    model, inputs = tiny_models.tiny_flux()
    torch.manual_seed(3)
    model.norm_out = TokenSelfAttention(model.norm_out, model.inner_dim)
    reference = _forward(model, inputs)
    enable_parallelism(model, make_config(ring, ulysses))
    errors = {}
    try:
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        errors["compiled, SDPA outside processors"] = rel_err(_forward(compiled, inputs), reference)
        model.set_attn_processor(_flux_processor()())
        errors["compiled, processor set after compiling"] = rel_err(_forward(compiled, inputs), reference)
    finally:
        disable_parallelism(model)
    return errors


def test_compiled(pool):
    for errors in pool(2).run(compiled_routing, 1, 2, timeout=300):
        for case, err in errors.items():
            assert err <= FP32_TOL, f"{case}: {err:.2e}"


# --- the dispatch wrapper forwards any signature (one process) ---


def _recording_wrapper(monkeypatch, original):
    calls = []
    monkeypatch.setattr(diffusers_attention, "context_parallel_attention",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or "cp")
    return diffusers_attention._make_wrapper(original), calls


def test_dispatch_wrapper_passes_new_arguments_through(monkeypatch):
    seen = []

    def future_dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False, attention_kwargs=None, *, backend=None, parallel_config=None,
                        new_option="off"):
        seen.append(dict(attn_mask=attn_mask, parallel_config=parallel_config, new_option=new_option, backend=backend))
        return "local"

    wrapper, calls = _recording_wrapper(monkeypatch, future_dispatch)
    q, k, v = (torch.randn(1, 4, 2, 8) for _ in range(3))
    mask = torch.ones(1, 4, dtype=torch.bool)
    handle = diffusers_attention.CPHandle(runtime="runtime")
    # Not context-parallel: the original gets every argument, the new one included, untouched.
    assert wrapper(q, k, v, mask, backend="flash", new_option="on") == "local"
    assert seen[-1] == dict(attn_mask=mask, parallel_config=None, new_option="on", backend="flash")
    # Context-parallel: q, k, v and the options are found by name or position.
    assert wrapper(q, k, v, mask, 0.0, False, 0.5, parallel_config=handle, backend="flash") == "cp"
    args, kwargs = calls[-1]
    assert args[:3] == (q, k, v) and args[3] is mask and args[4:] == (0.0, False, 0.5)
    assert kwargs == {"config": "runtime"}
    assert wrapper(query=q, key=k, value=v, scale=0.25, parallel_config=handle, new_option="off") == "cp"
    assert calls[-1][0][6] == 0.25
    # An argument the context-parallel path cannot honour is refused, not dropped.
    with pytest.raises(TypeError, match="new_option='on'"):
        wrapper(q, k, v, parallel_config=handle, new_option="on")
    # Inside a LocalAttention module a handle means "run it as diffusers would alone".
    with routing.run_locally():
        assert wrapper(q, k, v, parallel_config=handle, new_option="on") == "local"
    assert seen[-1]["parallel_config"] is None and seen[-1]["new_option"] == "on"


def test_dispatch_wrapper_with_a_positional_parallel_config(monkeypatch):
    seen = []

    def reordered(query, key, value, parallel_config=None, attn_mask=None):
        seen.append(parallel_config)
        return "local"

    wrapper, calls = _recording_wrapper(monkeypatch, reordered)
    q = torch.randn(1, 4, 2, 8)
    handle = diffusers_attention.CPHandle(runtime="runtime")
    assert wrapper(q, q, q, handle) == "cp" and calls[-1][0][3] is None  # attn_mask defaults to None
    with routing.run_locally():
        assert wrapper(q, q, q, handle) == "local"
    assert seen == [None]
    with pytest.raises(TypeError, match="parallel_config"):
        diffusers_attention._make_wrapper(lambda query, key, value: None)

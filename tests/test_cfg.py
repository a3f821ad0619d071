"""Batch (classifier-free-guidance) parallelism: `cfg_degree` beside ring and Ulysses, against one process.

Every catalogue model and case whose pipeline-shaped batch the degree divides (batched guidance stacks the
conditional and unconditional inputs, so those are the models' real CFG batches) runs with cfg_degree=2
alone (2 ranks); four batched-guidance models also with cfg_degree=2 x Ulysses 2 or ring 2 (4 ranks),
forward; one model also backward.
The same plans as without cfg, no per-model code. Tolerance: FP32_TOL relative.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as dist

from cp_hooks import ContextParallelConfig, disable_parallelism, enable_parallelism
from cp_hooks.verify.catalogue import ENTRIES, get_entry
from cp_hooks.verify.checker import compare_parallel, compare_parallel_backward
from cp_testing import FP32_TOL, make_config, rel_err


def _batched_cases(entry) -> list[str]:
    cases = []
    for case in entry.cases:
        _, inputs = entry.build(case)
        hidden = inputs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.shape[0] % 2 == 0:
            cases.append(case)
    return cases


# With context parallelism inside the groups: models of the batched-guidance pipelines named in docs/cfg.md
# (cfg alone runs every catalogue model with an even batch; the split of the batch is the same code).
WITH_CP = ("PixArtTransformer2DModel", "LTXVideoTransformer3DModel", "HunyuanVideoTransformer3DModel",
           "CogView3PlusTransformer2DModel")


def verify_cfg(ring: int, ulysses: int) -> list[str]:
    """Every catalogue case with an even batch under cfg_degree=2 (x the given context parallelism)."""
    lines, failures = [], []
    for name, entry in ENTRIES.items():
        if ring * ulysses > 1 and name not in WITH_CP:
            continue
        if entry.no_batch_split:
            continue  # refused with its reason (test_a_class_that_cannot_split_its_batch_is_refused)
        for case in _batched_cases(entry):
            model, inputs = entry.build(case)
            kwargs = dict(ulysses_anything=ulysses > 1 and entry.anything, ring_anything=ring > 1 and entry.anything)
            config = make_config(ring, ulysses, cfg=2, **kwargs)
            try:
                diffs = compare_parallel(model, inputs, config, tol=FP32_TOL)
            except Exception as e:  # noqa: BLE001  (report every model, not only the first)
                failures.append(f"{name} {case}: {type(e).__name__}: {str(e)[:200]}")
                continue
            for d in diffs:
                line = f"{name} {case} output {d.index}: rel {d.rel:.2e}"
                lines.append(line)
                if not d.passed:
                    failures.append(line)
    assert lines, "no catalogue case has an even batch: the test would prove nothing"
    assert not failures, f"rank {dist.get_rank()}: off by more than {FP32_TOL}:\n" + "\n".join(failures)
    return lines


def test_cfg_alone(pool):
    lines = pool(2).run(verify_cfg, 1, 1, timeout=600)[0]
    assert any(line.startswith("PixArtTransformer2DModel") for line in lines)


@pytest.mark.parametrize("ring,ulysses", [(1, 2), (2, 1)])
def test_cfg_with_context_parallelism(pool, ring, ulysses):
    lines = pool(4).run(verify_cfg, ring, ulysses, timeout=600)[0]
    assert {line.split()[0] for line in lines} == set(WITH_CP)


def verify_cfg_gradients() -> str:
    """Gradients with the batch split over cfg and the tokens over Ulysses: every parameter and input."""
    model, inputs = get_entry("PixArtTransformer2DModel").build()
    diffs = compare_parallel_backward(model, inputs, make_config(1, 2, cfg=2), tol=FP32_TOL)
    bad = [f"{d.kind} {d.name}: rel {d.rel:.2e}" for d in diffs if not d.passed]
    assert not bad and any(d.kind == "parameter" for d in diffs), bad
    return "ok"


def test_cfg_gradients(pool):
    pool(4).run(verify_cfg_gradients, timeout=300)


def refuse_odd_batch() -> str:
    """A batch of 3 with cfg_degree=2: the same ValueError on every rank, before any collective."""
    model, inputs = get_entry("FluxTransformer2DModel").build()
    inputs = {k: (v.repeat(3, *[1] * (v.dim() - 1)) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == 1
                  else v) for k, v in inputs.items()}
    enable_parallelism(model, make_config(1, 1, cfg=2))
    try:
        with pytest.raises(ValueError, match="the batch has 3 samples"):
            model(**inputs)
    finally:
        disable_parallelism(model)
    return "refused"


def test_batch_the_degree_does_not_divide_is_refused(pool):
    pool(2).run(refuse_odd_batch)


def refuse_declared() -> str:
    model, _ = get_entry("MiniMaxH3Transformer3DModel").build()
    with pytest.raises(ValueError, match="cannot split its batch over cfg groups"):
        enable_parallelism(model, make_config(1, 1, cfg=2))
    return "refused"


def test_a_class_that_cannot_split_its_batch_is_refused(pool):
    pool(2).run(refuse_declared)


def test_config_fields():
    config = ContextParallelConfig(cfg_degree=2, ulysses_degree=2)
    assert (config.cfg_degree, config.world_size, config.total_ranks) == (2, 2, 4)
    assert ContextParallelConfig(cfg_degree=2).world_size == 1
    with pytest.raises(ValueError, match="all 1"):
        ContextParallelConfig(cfg_degree=1)
    with pytest.raises(ValueError, match=">= 1"):
        ContextParallelConfig(cfg_degree=0, ulysses_degree=2)


def compiled_batched_guidance(ulysses: int = 1) -> float:
    """torch.compile(fullgraph=True) of a model with cfg_degree=2 (its class swapped for the pairing): traced as a
    plain call, the batch split over the groups, equal to one process."""
    model, inputs = get_entry("FluxTransformer2DModel").build()
    inputs = {k: torch.cat([v, v * 0.5]) if isinstance(v, torch.Tensor) and k not in ("img_ids", "txt_ids") else v
              for k, v in inputs.items()}  # conditional and unconditional stacked
    with torch.no_grad():
        reference = model(**inputs)[0]
    enable_parallelism(model, make_config(1, ulysses, cfg=2))
    try:
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            out = compiled(**inputs)[0]
    finally:
        disable_parallelism(model)
        torch._dynamo.reset()
    err = (out - reference).abs().max().item() / max(1.0, reference.abs().max().item())
    assert err <= FP32_TOL, err
    return err


def test_cfg_under_whole_model_compile(pool):
    pool(2).run(compiled_batched_guidance, timeout=300)
    pool(4).run(compiled_batched_guidance, 2, timeout=300)  # cfg 2 x Ulysses 2: the eager hooks inside the call


def unpadded_negative_prompt(ulysses: int) -> list[float]:
    """Sequential guidance whose negative prompt is shorter (no padding, as QwenImage's pipeline does): in a
    predicted pair the two groups run calls of different shapes, and the strict input check (on by default)
    compares the ranks of one group only. Three steps, equal to one process."""
    model, inputs = get_entry("FluxTransformer2DModel").build()
    short = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"][:, :-2] * -1,
                 txt_ids=inputs["txt_ids"][:-2])

    def steps(model):
        outputs = []
        with torch.no_grad():
            for _ in range(3):
                with model.cache_context("cond"):
                    outputs.append(model(**inputs)[0])
                with model.cache_context("uncond"):
                    outputs.append(model(**short)[0])
        return outputs

    expected = steps(model)
    flags = dict(ulysses_anything=True) if ulysses > 1 else {}
    enable_parallelism(model, make_config(1, ulysses, cfg=2, **flags))
    try:
        got = steps(model)
    finally:
        disable_parallelism(model)
    errors = [rel_err(g, e) for g, e in zip(got, expected)]
    assert max(errors) <= FP32_TOL, errors
    return errors


def test_sequential_guidance_with_an_unpadded_negative_prompt(pool):
    pool(2).run(unpadded_negative_prompt, 1)
    pool(4).run(unpadded_negative_prompt, 2)


def _flux_taking_any_keyword():
    """A Flux whose forward also takes **kwargs (and ignores `note`): a keyword it has no default for."""
    from diffusers import FluxTransformer2DModel

    class FluxTakingAnyKeyword(FluxTransformer2DModel):
        def forward(self, hidden_states, **kwargs):
            kwargs.pop("note", None)
            return super().forward(hidden_states, **kwargs)

    model, inputs = get_entry("FluxTransformer2DModel").build()
    model.__class__ = FluxTakingAnyKeyword
    return model, inputs


def unpaired_calls_warn() -> list[float]:
    """Calls whose arguments differ by more than values (a keyword in one call only, with no default) are not
    paired: a warning says so once, and both calls are computed, equal to one process."""
    model, inputs = _flux_taking_any_keyword()
    cond = dict(inputs, note="cond only")
    uncond = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"] * -1)
    with torch.no_grad():
        expected = (model(**cond)[0], model(**uncond)[0])
    steps = []
    enable_parallelism(model, make_config(1, 1, cfg=2))
    try:
        with torch.no_grad():
            for step in range(2):
                with model.cache_context("cond"):
                    a = model(**cond)[0]
                with pytest.warns(RuntimeWarning, match="not paired") if step == 0 else contextlib.nullcontext():
                    with model.cache_context("uncond"):
                        b = model(**uncond)[0]
                steps.append((a, b))
    finally:
        disable_parallelism(model)
    return [rel_err(g, e) for pair in steps for g, e in zip(pair, expected)]


def test_calls_that_cannot_be_paired_warn(pool):
    for errors in pool(2).run(unpaired_calls_warn):
        assert max(errors) <= FP32_TOL, errors


def guider_labels(labels: tuple[str, str]) -> tuple[float, int]:
    """Sequential guidance with the labels of a pipeline ("cond"/"uncond") or of diffusers' ClassifierFreeGuidance
    guider ("pred_cond"/"pred_uncond", HunyuanVideo 1.5's pipeline): paired either way, equal to one process.
    Returns (largest relative difference, forwards per rank over three steps)."""
    model, inputs = get_entry("HunyuanVideo15Transformer3DModel").build()
    negative = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"] * -1)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))

    def steps():
        outputs = []
        with torch.no_grad():
            for _ in range(3):
                with model.cache_context(labels[0]):
                    outputs.append(model(**inputs)[0])
                with model.cache_context(labels[1]):
                    outputs.append(model(**negative)[0])
        return outputs

    expected = steps()
    calls.clear()
    enable_parallelism(model, make_config(1, 1, cfg=2))
    try:
        got = steps()
    finally:
        disable_parallelism(model)
    return max(rel_err(g, e) for g, e in zip(got, expected)), len(calls)


@pytest.mark.parametrize("labels", [("cond", "uncond"), ("pred_cond", "pred_uncond")])
def test_sequential_guidance_labels(pool, labels):
    for err, forwards in pool(2).run(guider_labels, labels):
        assert err <= FP32_TOL, err
        assert forwards == 4, forwards  # learns on the first step (2 calls), then one call per step

"""Qwen-Image 2.1 with its KV cache, and the plan's own attention processors (`ContextParallelProcessor`).

QwenImage21Pipeline's default: step 0 runs the whole joint sequence and stores the prefix keys and values
("extract"), later steps recompute only the target image against them ("cached"). Under context parallelism
each rank caches its part of the prefix and attends over [that part, its target shard]. Checked against one
process (fp32, relative 1e-5) for both steps, Ulysses 2 and ring 2, padded prompts and condition images; also
that the processors are swapped back at disable, that a processor replaced after enable is refused on every
rank, and that uneven cached key counts without the anything flags are refused.
"""

import pytest
import torch
import torch.distributed as dist

from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.plans.qwenimage21 import QwenImage21ContextParallelProcessor
from cp_hooks.verify.catalogue import get_entry
from cp_testing import FP32_TOL, make_config, rel_err

CASES = {"t2i": dict(prompts=(7, 4)),
         "edit": dict(prompts=(5, 2), conditions=((1, 4, 2), (1, 2, 6)), target=(1, 2, 6))}


def _two_steps(model, inputs, step1):
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    cache = QwenImage21KVCache(len(model.transformer_blocks))
    with torch.no_grad():
        first = model(**inputs, kv_cache=cache, kv_cache_mode="extract")[0]
        second = model(**step1, kv_cache=cache, kv_cache_mode="cached")[0]
    return first, second


def cached_steps_match(ring, ulysses, rotate):
    from cp_hooks.verify.models.qwenimage21 import qwenimage21_inputs

    entry = get_entry("QwenImage21Transformer2DModel")
    worst = 0.0
    for case, kwargs in CASES.items():
        model, _ = entry.build()
        g = torch.Generator().manual_seed(5)
        inputs = qwenimage21_inputs(entry.config, g, **kwargs)
        step1 = dict(inputs, timestep=torch.full_like(inputs["timestep"], 0.9))
        target = step1["img_shapes"][0][-1][1] * step1["img_shapes"][0][-1][2]
        step1["hidden_states"] = inputs["hidden_states"].clone()
        step1["hidden_states"][:, -target:] = torch.randn(inputs["hidden_states"].shape[0], target,
                                                          inputs["hidden_states"].shape[2], generator=g)
        ref = _two_steps(model, inputs, step1)
        originals = [block.attn.processor for block in model.transformer_blocks]
        config = make_config(ring, ulysses, rotate_method=rotate, ulysses_anything=ulysses > 1,
                             ring_anything=ring > 1)
        enable_parallelism(model, config)
        assert all(isinstance(b.attn.processor, QwenImage21ContextParallelProcessor) for b in model.transformer_blocks)
        out = _two_steps(model, inputs, step1)
        disable_parallelism(model)
        assert [b.attn.processor for b in model.transformer_blocks] == originals, "processors not put back"
        for step, (a, b) in enumerate(zip(out, ref)):
            err = rel_err(a, b)
            assert err <= FP32_TOL, f"rank {dist.get_rank()} {case} step {step}: {err:.2e}"
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("ring,ulysses,rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
def test_kv_cache_steps_match_one_process(pool, ring, ulysses, rotate):
    assert max(pool(2).run(cached_steps_match, ring, ulysses, rotate)) <= FP32_TOL


def refusals():
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21AttnProcessor

    entry = get_entry("QwenImage21Transformer2DModel")
    model, inputs = entry.build()
    messages = []
    enable_parallelism(model, make_config(1, 2, ulysses_anything=True))
    model.transformer_blocks[1].attn.set_processor(QwenImage21AttnProcessor())
    try:
        with torch.no_grad():
            model(**inputs)
    except ValueError as error:
        messages.append(str(error))
    disable_parallelism(model)
    # A cached step whose ranks hold different numbers of keys, without the anything flags: 10 prefix and 8
    # target tokens, so the prefill's shards of 9 leave 9 prefix rows on rank 0 and 1 on rank 1, beside 4
    # target rows each.
    from cp_hooks.verify.models.qwenimage21 import qwenimage21_inputs

    inputs = qwenimage21_inputs(entry.config, torch.Generator().manual_seed(0), prompts=(2,), target=(1, 4, 2))
    model, _ = entry.build()
    enable_parallelism(model, make_config(1, 2))
    try:
        _two_steps(model, inputs, inputs)
    except ValueError as error:
        messages.append(str(error))
    disable_parallelism(model)
    return messages


def test_refusals_on_every_rank(pool):
    for messages in pool(2).run(refusals):
        assert len(messages) == 2, messages
        assert "was replaced after enable_parallelism" in messages[0]
        assert "uneven key counts need" in messages[1]

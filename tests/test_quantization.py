"""A torchao-quantized transformer (int8 weight-only, the usual memory saver) under context parallelism.

The same quantized weights run alone and with Ulysses 2 / ring 2: context parallelism splits the tokens, not
the weights, so the outputs must agree to fp32 rounding (FP32_TOL relative) in both orders of quantizing and
enabling. Skipped where torchao is not installed (`pip install torchao`).
"""

from __future__ import annotations

import pytest
import torch

from cp_hooks import disable_parallelism, enable_parallelism
from cp_hooks.verify.catalogue import get_entry
from cp_testing import FP32_TOL, make_config, rel_err


def quantized_parity(ring: int, ulysses: int, quantize_first: bool) -> float:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model, inputs = get_entry("FluxTransformer2DModel").build()
    quantize_(model, Int8WeightOnlyConfig())
    with torch.no_grad():
        reference = model(**inputs)[0]
    if quantize_first:
        enable_parallelism(model, make_config(ring, ulysses))
    else:  # enable on a fresh model, then quantize the enabled one (same seed: the same weights)
        model, inputs = get_entry("FluxTransformer2DModel").build()
        enable_parallelism(model, make_config(ring, ulysses))
        quantize_(model, Int8WeightOnlyConfig())
    try:
        with torch.no_grad():
            out = model(**inputs)[0]
    finally:
        disable_parallelism(model)
    return rel_err(out, reference)


@pytest.mark.parametrize("quantize_first", [True, False], ids=["quantize_then_cp", "cp_then_quantize"])
def test_int8_weight_only(pool, quantize_first):
    pytest.importorskip("torchao")
    for ring, ulysses in ((1, 2), (2, 1)):
        rel = pool(2).run(quantized_parity, ring, ulysses, quantize_first, timeout=300)[0]
        assert rel <= FP32_TOL, (ring, ulysses, rel)

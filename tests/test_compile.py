"""`torch.compile` of a context-parallel model: the same result as the single-process model.

dynamo breaks the graph around cp_hooks' hooks and collectives (the model is not one full graph) and
compiles what lies between. Backends "eager" and "aot_eager" exercise the tracing and AOT autograd without
the C++ code generation that "inductor" adds (which also works: checked by hand on CPU, 2.4e-6 from the
single-process output at fp32, 15-40 s to compile on two cores).
"""

import pytest
import torch
import torch.distributed as dist

import tiny_models
from cp_hooks import disable_parallelism, enable_parallelism
from cp_testing import make_config, rel_err

COMPILE_TOL = 1e-5  # compiled graphs may fuse and reorder fp32 ops; same bound as the eager comparison


def compiled_parity(ring, ulysses, rotate, backend):
    torch._dynamo.reset()
    model, inputs = tiny_models.tiny_flux()
    with torch.no_grad():
        reference = model(**inputs)[0]
        enable_parallelism(model, make_config(ring, ulysses, rotate_method=rotate))
        compiled = torch.compile(model, backend=backend)
        errors = [rel_err(compiled(**inputs)[0], reference) for _ in range(2)]  # compile, then the cached graph
        disable_parallelism(model)
    assert max(errors) <= COMPILE_TOL, f"rank {dist.get_rank()}: {backend} error {errors}"
    return errors


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("ring, ulysses, rotate", [(1, 2, "allgather"), (2, 1, "alltoall")])
def test_compiled_model_matches_one_process(pool, ring, ulysses, rotate, backend):
    pool(2).run(compiled_parity, ring, ulysses, rotate, backend)

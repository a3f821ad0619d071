"""Property-based tests (hypothesis): random shapes, degrees, modes, dtypes and masks.

Hypothesis draws the cases in the test process; each case runs on a persistent pool of gloo ranks.
Bounded (max_examples) so that the suite stays fast; derandomized so that CI is reproducible.
"""

import torch
import torch.distributed as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cp_hooks.forward.sharding import gather_tensor, share_replicated_gradient, split_tensor
from test_attention import attention_parity

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

MODES = {2: [(1, 2), (2, 1)], 4: [(1, 4), (4, 1), (2, 2)]}


@st.composite
def attention_cases(draw):
    world = draw(st.sampled_from([2, 4]))
    ring, ulysses = draw(st.sampled_from(MODES[world]))
    return dict(
        world=world, ring=ring, ulysses=ulysses,
        rotate=draw(st.sampled_from(["allgather", "alltoall"])),
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 37)), draw(st.integers(1, 6)),
               draw(st.sampled_from([4, 8, 16]))),
        dtype=draw(st.sampled_from(["float32", "float32", "bfloat16"])),
        mask=draw(st.sampled_from([None, "padding", "additive"])),
        causal=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(case=attention_cases())
def test_attention_equals_single_process(pool, case):
    causal = case["causal"] and case["mask"] is None
    # Uneven lengths and heads are allowed in every mode with the anything flags on.
    pool(case["world"]).run(attention_parity, case["ring"], case["ulysses"], case["rotate"], case["shape"],
                            case["dtype"], case["mask"], causal, True, case["seed"])


def split_gather_identity(shape, dim, seed):
    world, rank = dist.get_world_size(), dist.get_rank()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    local = split_tensor(x, dim, rank, world)
    full = gather_tensor(local, dim, dist.group.WORLD, world, uneven=True)
    assert torch.equal(full, x)
    full = share_replicated_gradient(full, world)  # every rank back-propagates the same loss: 1/N each
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
    (full * weight).sum().backward()
    grad = x.grad.clone()
    dist.all_reduce(grad)  # partial gradients sum to the single-process gradient
    assert torch.allclose(grad, weight)
    return True


@SETTINGS
@given(world=st.sampled_from([2, 4]), shape=st.lists(st.integers(1, 9), min_size=1, max_size=4),
       dim_index=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_split_then_gather_is_identity(pool, world, shape, dim_index, seed):
    dim = dim_index % len(shape)
    pool(world).run(split_gather_identity, tuple(shape), dim, seed)

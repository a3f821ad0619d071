"""Bad input is refused on every rank before any collective; inconsistent ranks are reported, not hung;
the model survives errors, dtype moves and state-dict round trips."""

import pytest
import torch
import torch.distributed as dist

import tiny_models
from cp_hooks import ContextParallelConfig, context_parallel_attention, disable_parallelism, enable_parallelism
from cp_testing import FP32_TOL, make_config, rel_err


def _expect(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def _still_in_step():
    # If any rank had entered a collective that the others skipped, this all-reduce would hang or mismatch.
    value = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(value)
    assert value.item() == sum(range(dist.get_world_size()))


def bad_attention_inputs():
    """Each call raises the same error on every rank, before any collective."""
    config = make_config(1, 2)
    q = torch.randn(1, 8, 4, 8)
    attn = context_parallel_attention
    _expect(ValueError, "must be 4-D", attn, q[0], q[0], q[0], config=config)
    _expect(TypeError, "share a dtype", attn, q, q.double(), q, config=config)
    _expect(ValueError, "batch or head_dim", attn, q, torch.randn(2, 8, 4, 8), torch.randn(2, 8, 4, 8), config=config)
    _expect(ValueError, "grouped-query", attn, q, q[:, :, :2], q[:, :, :2], config=config)
    _expect(ValueError, "not divisible by ulysses_degree=2.*ulysses_anything", attn, q[:, :, :3], q[:, :, :3],
            q[:, :, :3], config=config)
    causal_mask = torch.ones(8, 8, dtype=torch.bool).tril()[None, None]  # varies along queries: not key padding
    _expect(ValueError, "varies along queries", attn, q, q, q, causal_mask, config=config)
    _expect(ValueError, "expected \\(batch=1, local_kv_seq=8\\)", attn, q, q, q, torch.ones(1, 7, dtype=torch.bool),
            config=config)
    _expect(TypeError, "boolean .* or an additive float", attn, q, q, q, torch.ones(1, 8, dtype=torch.int64),
            config=config)
    _expect(ValueError, "either attn_mask or is_causal", attn, q, q, q, torch.ones(1, 8, dtype=torch.bool),
            is_causal=True, config=config)
    _expect(ValueError, "Ring attention cannot apply attention dropout", attn, q, q, q, dropout_p=0.1,
            config=make_config(2, 1))
    _expect(ValueError, "communicates on 'cpu'", attn, q.to("meta"), q.to("meta"), q.to("meta"), config=config)
    _expect(RuntimeError, "not set up", attn, q, q, q, config=ContextParallelConfig(ulysses_degree=2))
    _still_in_step()
    return True


def test_bad_attention_inputs_on_every_rank(pool):
    assert pool(2).run(bad_attention_inputs) == [True, True]


def bad_model_inputs():
    model, inputs = tiny_models.tiny_flux(text_len=7)
    enable_parallelism(model, make_config(1, 2))
    # 7 text tokens over 2 ranks without an anything flag: refused, naming the flags.
    _expect(ValueError, "not divisible by the 2 context-parallel ranks.*ulysses_anything", model, **inputs)
    # A tensor whose rank contradicts the plan's expected_dims.
    wrong = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"][0, :6])
    _expect(ValueError, "has 2 dims .* plan expects 3", model, **wrong)
    _still_in_step()
    # The model stays usable after errors raised inside a parallel forward.
    good = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"][:, :6], txt_ids=inputs["txt_ids"][:6])
    out = model(**good)[0]
    disable_parallelism(model)
    with torch.no_grad():
        assert rel_err(out, model(**good)[0]) <= FP32_TOL
    return True


def test_bad_model_inputs_on_every_rank(pool):
    pool(2).run(bad_model_inputs)


def inconsistent_ranks(strict):
    """Rank 1 gets a longer prompt than rank 0: reported on every rank (strict) instead of hanging."""
    text_len = 6 if dist.get_rank() == 0 else 8
    model, inputs = tiny_models.tiny_flux(text_len=text_len)
    enable_parallelism(model, make_config(1, 2), strict=strict)
    try:
        model(**inputs)
    except ValueError as e:
        message = str(e)
        assert "different input shapes" in message
        assert "rank 0: " in message and "(1, 6, 32)" in message and "(1, 8, 32)" in message
        return "reported"
    finally:
        disable_parallelism(model)
    return "not detected"


def test_inconsistent_ranks_are_reported(pool):
    assert pool(2).run(inconsistent_ranks, True) == ["reported", "reported"]


def enable_twice_and_device_checks():
    model, _ = tiny_models.tiny_flux()
    config = make_config(1, 2)
    enable_parallelism(model, config)
    _expect(RuntimeError, "already enabled", enable_parallelism, model, config)
    disable_parallelism(model)
    assert disable_parallelism(model) is model  # a no-op when not enabled
    meta_model, _ = tiny_models.tiny_flux()
    _expect(ValueError, "model is on meta", enable_parallelism, meta_model.to("meta"), config)
    assert "forward" not in meta_model.__dict__
    _still_in_step()
    return True


def test_enable_twice_and_wrong_device(pool):
    pool(2).run(enable_twice_and_device_checks)


def survives_moves_and_state_dicts():
    model, inputs = tiny_models.tiny_wan()
    config = make_config(2, 1, rotate_method="alltoall")
    with torch.no_grad():
        reference64 = model.to(torch.float64)(**{k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                                 for k, v in inputs.items()})[0]
    model.to(torch.float32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    enable_parallelism(model, config)
    assert list(model.state_dict()) == list(state)  # hooks add nothing to the state dict
    model.load_state_dict(state)  # loading while enabled works
    model.to(torch.float64)  # moving after enabling: the hooks follow the model
    inputs64 = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs64)[0]
    assert out.dtype == torch.float64 and rel_err(out, reference64) <= 1e-10
    disable_parallelism(model)
    model.to(torch.float32)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    return True


def test_model_moves_and_state_dicts(pool):
    pool(2).run(survives_moves_and_state_dicts)

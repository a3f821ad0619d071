"""`cp_hooks.value_checks` in one process: checks inside an enabled forward are kept unread until its end.

The distributed behaviour (every rank raises when one rank's mask fails) is in test_attention.py and
test_length_memo.py; here, what a forward's record holds and when it is read.
"""

import torch

from cp_hooks.forward import value_checks


class _CountsReads(torch.Tensor):
    """A 0-d boolean tensor that counts how often Python reads its value."""

    reads = 0

    def __bool__(self):
        type(self).reads += 1
        return super().__bool__()


def test_conditions_inside_a_forward_are_read_at_its_end_only():
    value_checks.begin_forward("model")
    good = torch.tensor(True)
    bad = torch.tensor(False)
    for _ in range(10):  # ten layers' checks: nothing read, every call proceeds
        assert value_checks.holds(good, "cp_hooks: fine")
    assert value_checks.holds(bad, "cp_hooks: the mask is wrong")
    assert value_checks.record(False, "cp_hooks: lengths changed", kind="lengths")
    record = value_checks.end_forward("model")
    assert record.checked == 12
    assert record.any_failed(torch.device("cpu")).item() == 1.0
    assert record.failures == [("mask", "cp_hooks: the mask is wrong"), ("lengths", "cp_hooks: lengths changed")]


def test_a_forward_whose_checks_hold_reports_nothing():
    value_checks.begin_forward("model")
    value_checks.holds(torch.tensor(True), "cp_hooks: fine")
    value_checks.record(True, "cp_hooks: fine", kind="lengths")
    record = value_checks.end_forward("model")
    assert record.any_failed(torch.device("cpu")).item() == 0.0 and record.failures == []


def test_outside_a_forward_a_check_is_read_at_once():
    condition = torch.tensor(False).as_subclass(_CountsReads)
    _CountsReads.reads = 0
    assert value_checks.holds(condition, "cp_hooks: wrong") is False
    assert _CountsReads.reads == 1
    assert value_checks.record(False, "cp_hooks: wrong") is False

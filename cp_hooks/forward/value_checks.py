"""Checks on tensor values that every rank must agree on, so that a failure raises on every rank alike.

Some mask forms are recognised by their values (a key-padding mask repeated over heads, `v[q] & v[k]`, a
whole-sequence mask shared by all heads). The values differ per rank, so a check can fail on one rank and
hold on its peers: raising there at once would leave the peers blocked in the attention's collectives. During
an enabled model's eager forward, a failed check is therefore recorded, the forward goes on (its result is
discarded), and at the forward's end every rank learns of every failure from one small all-reduce and raises
the same error. The conditions are not even read until then: one device synchronisation per forward, not one
per checked layer. That all-reduce runs only in forwards that evaluated such a check — which depends on shapes
alone, so every rank runs it or none does. Under torch.compile a graph cannot branch on values: the check is
asserted when the graph runs (`torch._assert_async`), on the rank where it fails. Outside an enabled model's
forward (a direct `context_parallel_attention` call) a failed check raises at once, as before.

The same deferral serves the remembered per-call lengths of the anything modes (`cp_hooks.length_memo`): a
rank whose length differs from the remembered one records it here, under its own kind.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cp_hooks.forward import context


class _Forward:
    """The value checks of one forward: how many ran, and the messages of those that failed.

    Conditions on tensors are kept unevaluated until the forward's end (`failures`): reading each at once
    would synchronise with the device once per layer; read together, once per forward.
    """

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.checked = 0
        self._failures: list[tuple[str, str]] = []  # (kind, message), of checks already evaluated
        self._pending: list[tuple[torch.Tensor, str, str]] = []  # (condition, kind, message), not yet read

    def add(self, condition: torch.Tensor | bool, message: str, kind: str) -> None:
        """One check: a condition tensor (kept unread) or a result already evaluated."""
        self.checked += 1
        if isinstance(condition, torch.Tensor):
            self._pending.append((condition.detach().reshape(()), kind, message))
        elif not condition:
            self._failures.append((kind, message))

    def any_failed(self, device: torch.device) -> torch.Tensor:
        """A float tensor on `device`, 1.0 where a check failed on this rank, read by nobody yet."""
        flag = torch.tensor([1.0 if self._failures else 0.0], device=device)
        if self._pending:
            failed = ~self._conditions().all()
            flag = torch.maximum(flag, failed.to(device=device, dtype=flag.dtype).reshape(1))
        return flag

    def _conditions(self) -> torch.Tensor:
        return torch.stack([c.to(torch.bool) for c, _, _ in self._pending])

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(kind, message) of every failed check: those on tensors (read now, together), then those recorded
        already evaluated."""
        if self._pending:
            results = self._conditions().tolist()  # one read
            self._failures = [
                (kind, message) for (_, kind, message), ok in zip(self._pending, results) if not ok
            ] + self._failures
            self._pending = []
        return self._failures


class ValueCheckError(ValueError):
    """A value check failed on some rank during a forward; raised on every rank.

    Attributes:
        kinds: the kinds of the checks that failed, on any rank ("mask", "lengths").
    """

    def __init__(self, message: str, kinds: set[str]) -> None:
        super().__init__(message)
        self.kinds = kinds


def _active() -> list:
    """The value-check records of the enabled forwards in progress on this thread, innermost last."""
    return context.state().checks


def holds(condition: torch.Tensor, message: str) -> bool:
    """Whether a condition on tensor values holds; within an enabled forward, a failure is deferred to its end.

    Returns False only where the caller must refuse at once (no enabled forward around the call).
    """
    if torch.compiler.is_compiling():
        torch._assert_async(condition, message)
        return True
    active = _active()
    if not active:
        return bool(condition)
    active[-1].add(condition, message, "mask")  # read at the forward's end, with the others
    return True


def record(ok: bool, message: str, kind: str = "mask") -> bool:
    """Record a check already evaluated on this rank; as `holds`, False only where the caller must refuse at once."""
    active = _active()
    if not active:
        return ok
    active[-1].add(ok, message, kind)
    return True


def begin_forward(owner: object) -> None:
    """`owner`'s forward starts (eager): its value checks are collected until `end_forward(owner)`."""
    if not torch.compiler.is_compiling():
        _active().append(_Forward(owner))


def end_forward(owner: object) -> _Forward | None:
    """`owner`'s forward has ended, normally or by an exception: stop collecting; its record, to `agree` on."""
    active = _active()
    if torch.compiler.is_compiling() or not active or active[-1].owner is not owner:
        return None
    return active.pop()


def agree(forward: _Forward | None, group, device_type: str, always: bool = False) -> None:
    """After a forward that ended normally: if it ran value checks (or `always`), raise on every rank of
    `group` when any rank's failed.

    Raises:
        ValueCheckError: a value check failed on some rank of the group (the message names the ranks).
    """
    if forward is None or not (forward.checked or always):
        return
    device = torch.device("cuda", torch.cuda.current_device()) if device_type == "cuda" else torch.device(device_type)
    flag = forward.any_failed(device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if flag.item() == 0:  # the forward's one read of its checks
        return
    reports: list = [None] * dist.get_world_size(group)
    kinds = sorted({kind for kind, _ in forward.failures})
    dist.all_gather_object(reports, (dist.get_rank(), forward.failures[:1], kinds), group=group)
    failed = [(rank, found[0][1]) for rank, found, _ in reports if found]
    raise ValueCheckError(
        f"{failed[0][1].removeprefix('cp_hooks: ')} (found on rank(s) {[r for r, _ in failed]} "
        "during this forward; every rank raises, and the forward's result is discarded).",
        {kind for _, _, found in reports for kind in found},
    )

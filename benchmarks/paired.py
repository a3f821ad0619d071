"""Paired comparisons of timed rounds: how sure a difference between two variants is.

`run.py` times every variant once per round, in rotating order, so round r of two variants ran seconds
apart on the same machine state. The ratio of their times in the same round cancels most of the drift
that a shared machine adds; its median over rounds, with a bootstrap interval, says whether a gap of a few
percent is a difference or noise.
"""

from __future__ import annotations

import random
import statistics

CONFIDENCE = 0.95


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """numerator[r] / denominator[r] for every round both have."""
    return [a / b for a, b in zip(numerator, denominator) if b > 0]


def median_interval(values: list[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median and its percentile-bootstrap interval at CONFIDENCE.

    Deterministic (fixed seed), so that regenerating a report from the same JSON gives the same numbers.
    """
    if not values:
        raise ValueError("no values")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - CONFIDENCE) / 2
    low = medians[int(tail * (resamples - 1))]
    high = medians[int((1 - tail) * (resamples - 1))]
    return statistics.median(values), low, high


def verdict(median: float, high: float, goal: float) -> str:
    """"yes" when the median reaches the goal, "within noise" when only the interval does, else "no"."""
    if median >= goal:
        return "yes"
    return "within noise" if high >= goal else "no"

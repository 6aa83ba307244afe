"""Pure summaries the benchmarks report: percentiles, `median (range)` cells, paired ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median_range(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`median (lowest–highest)`."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    return f"{fmt.format(median)} ({fmt.format(ordered[0])}–{fmt.format(ordered[-1])})"


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Each round's numerator over the same round's denominator, sorted."""
    return sorted(n / d for n, d in zip(numerators, denominators, strict=True))


def verdict(ratios: Sequence[float], target: float) -> str:
    return "met" if statistics.median(ratios) >= target else "**missed**"

"""Process-wide counters (fall-backs, breaker changes, purchase outcomes, ...).

Counting is an in-memory add, cheap enough for any request path; tests read counts back.
(Export as CloudWatch EMF and Prometheus text is not built yet.)
"""

from __future__ import annotations

from collections import Counter

_counts: Counter[str] = Counter()


def increment(name: str, value: int = 1) -> None:
    _counts[name] += value


def count(name: str) -> int:
    return _counts[name]

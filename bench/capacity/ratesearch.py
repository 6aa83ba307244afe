"""The search for the highest offered rate that holds: step from a first guess until one
rate holds and another fails, then bisect between them (geometrically) down to a resolution.
Pure: told each rate's outcome, it names the next rate to try, or None when done."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RateSearch:
    start: float
    """The first rate tried."""
    step: float
    """Factor the rate moves by until the bracket closes (up after a hold, down after a
    failure)."""
    resolution: float = 0.05
    """Done when the lowest failing rate is within this share above the highest holding."""
    max_runs: int = 9
    floor: float = 5.0
    """Below this nothing is tried: the capacity is reported as 0."""
    ceiling: float = 50_000.0
    held: float | None = None
    failed: float | None = None
    tried: list[tuple[float, bool]] = field(default_factory=list)

    def next_rate(self) -> float | None:
        if len(self.tried) >= self.max_runs:
            return None
        if self.held is None and self.failed is None:
            return round(self.start)
        if self.held is None:
            assert self.failed is not None
            lower = round(self.failed / self.step)
            return lower if lower >= self.floor else None
        if self.failed is None:
            higher = round(self.held * self.step)
            return higher if higher <= self.ceiling else None
        if self.failed <= self.held * (1 + self.resolution):
            return None
        middle = round(math.sqrt(self.held * self.failed))
        return middle if self.held < middle < self.failed else None

    def record(self, rate: float, held: bool) -> None:
        self.tried.append((rate, held))
        if held:
            self.held = rate if self.held is None else max(self.held, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)

    @property
    def capacity(self) -> float:
        """The highest rate that held (0 when none did)."""
        return self.held or 0.0

"""A circuit breaker around the database: closed → open → half-open → closed.

Closed: calls go through; the breaker opens after `failure_threshold` consecutive failures,
or when at least `min_calls` calls in the last `window_s` seconds failed at `failure_rate` or
more. Open: calls are refused at once (callers serve stale data or answer 503) until
`open_timeout_s` has passed. Half-open: one probe call at a time goes through; after
`success_threshold` successful probes the breaker closes, any failure opens it again.

Hand-written rather than taken from purgatory or aiobreaker: both read the wall clock
internally (no injectable clock, so no sleep-free tests), and the whole state machine is
these eighty lines. State is per process, as each Lambda environment must judge its own
connectivity.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

from edgemart import metrics
from edgemart.errors import EdgemartError
from edgemart.logging import logger

State = Literal["closed", "open", "half_open"]


class CircuitOpenError(EdgemartError):
    """The breaker refuses calls: the dependency is considered down."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"circuit open; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(eq=False, repr=False)
class CircuitBreaker:
    name: str
    _: KW_ONLY
    failure_threshold: int = 5
    success_threshold: int = 3
    open_timeout_s: float = 30.0
    failure_rate: float = 0.5
    window_s: float = 60.0
    min_calls: int = 10
    clock: Callable[[], float] = time.monotonic
    _state: State = field(default="closed", init=False)
    _consecutive_failures: int = field(default=0, init=False)
    _probe_successes: int = field(default=0, init=False)
    _probe_in_flight: bool = field(default=False, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _calls: deque[tuple[float, bool]] = field(default_factory=deque, init=False)

    @property
    def state(self) -> State:
        if self._state == "open" and self.clock() - self._opened_at >= self.open_timeout_s:
            self._transition("half_open")
        return self._state

    def before_call(self) -> None:
        """Raise CircuitOpenError unless a call may go through now."""
        state = self.state
        if state == "open":
            raise CircuitOpenError(self.open_timeout_s - (self.clock() - self._opened_at))
        if state == "half_open":
            if self._probe_in_flight:
                raise CircuitOpenError(1.0)
            self._probe_in_flight = True

    def abandon(self) -> None:
        """A call ended without telling whether the dependency works (it was cancelled)."""
        self._probe_in_flight = False

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._remember(ok=True)
        self._consecutive_failures = 0
        if self._state == "half_open":
            self._probe_successes += 1
            if self._probe_successes >= self.success_threshold:
                self._transition("closed")

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._remember(ok=False)
        self._consecutive_failures += 1
        if self._state == "half_open" or self._should_open():
            self._transition("open")

    def _should_open(self) -> bool:
        if self._state != "closed":
            return False
        if self._consecutive_failures >= self.failure_threshold:
            return True
        failures = sum(1 for _, ok in self._calls if not ok)
        return (
            len(self._calls) >= self.min_calls and failures / len(self._calls) >= self.failure_rate
        )

    def _remember(self, *, ok: bool) -> None:
        now = self.clock()
        self._calls.append((now, ok))
        while self._calls and self._calls[0][0] <= now - self.window_s:
            self._calls.popleft()

    def _transition(self, state: State) -> None:
        previous, self._state = self._state, state
        if previous == "open":
            open_s = self.clock() - self._opened_at
            metrics.record(metrics.CIRCUIT_OPEN_TIME, open_s, breaker=self.name)
        if state == "open":
            self._opened_at = self.clock()
        if state in ("half_open", "closed"):
            self._probe_successes = 0
            self._probe_in_flight = False
        if state == "closed":
            self._consecutive_failures = 0
            self._calls.clear()
        logger.warning("circuit %s: %s -> %s", self.name, previous, state)
        metrics.record(metrics.CIRCUIT_STATE_CHANGES, breaker=self.name, state=state)

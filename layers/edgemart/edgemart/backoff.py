"""Leaving a failing backend alone for a while.

The rate limiter's shared backend, the Redis counters and the shared cache can each be done
without (the caller falls back to something in this process). After a failure such a backend
is left alone for `retry_after_s`, so a backend that is down costs one timeout per interval,
not one per request; then it is tried again, so it is used again as soon as it is back.
Failures are logged at most once per `log_every_s`.

Not the circuit breaker (`edgemart.breaker`): that one counts failures before it opens and
lets probes through one at a time before it closes; this skips after any single failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from edgemart.logging import ThrottledWarning


@dataclass
class Backoff:
    message: str
    """The warning logged for a failure, formatted with `failed`'s args."""
    _: KW_ONLY
    retry_after_s: float = 1.0
    log_every_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _skip_until: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._warning = ThrottledWarning(self.message, every_s=self.log_every_s)

    def ready(self) -> bool:
        """False while the backend is left alone after a failure."""
        return self.clock() >= self._skip_until

    def failed(self, *args: object) -> None:
        """The backend failed: leave it alone from now, and log `message % args` (throttled)."""
        self._skip_until = self.clock() + self.retry_after_s
        self._warning.note(*args)

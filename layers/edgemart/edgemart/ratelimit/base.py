"""The contract every rate-limit backend implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edgemart.errors import EdgemartError
from edgemart.ratelimit.window import Decision, Policy

Clock = Callable[[], float]
"""Seconds since the epoch, like `time.time`; injected so tests control time."""


class RateLimitBackendError(EdgemartError):
    """A shared backend could not answer (down, timed out, refused the script)."""


class RateLimiter(Protocol):
    backend: str

    async def check(self, key: str, policy: Policy) -> Decision:
        """Count one request for `key` under `policy` and say whether it is admitted."""
        ...

    async def ping(self) -> bool:
        """Whether the backend answers now (for /health); never raises."""
        ...

    async def aclose(self) -> None: ...


def now_micros(clock: Clock) -> int:
    return round(clock() * 1_000_000)

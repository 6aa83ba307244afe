"""Retries for transient database failures: exponential backoff with full jitter, bounded in
attempts and in total time, and only for errors that mean "nothing happened, try again":
a serialization failure (40001), a deadlock (40P01), or a connection lost or refused. A
statement timeout, an exhausted pool or an open circuit is never retried (retrying would add
load exactly when the database needs less), and neither is any error the database answered.

Only whole operations that are safe to repeat are retried (a read; a purchase carrying its
idempotency key). Hand-written rather than tenacity or stamina: both fit (async, injectable
sleep, full jitter), but importing either costs 28-33 ms of every cold start, for what is
twenty lines here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from psycopg import OperationalError
from psycopg.errors import QueryCanceled

from edgemart import metrics

T = TypeVar("T")

TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (pg_terminate_backend, restarts)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up)
        "08000",
        "08001",
        "08003",
        "08004",
        "08006",  # connection exceptions
    }
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, QueryCanceled):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in TRANSIENT_SQLSTATES:
        return True
    # A connection failure seen by the client carries no SQLSTATE from the server.
    return isinstance(exc, OperationalError) and sqlstate is None


@dataclass(slots=True)
class RetryPolicy:
    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    total_s: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = field(default_factory=lambda: random.random)
    clock: Callable[[], float] = time.monotonic

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        ceiling: float = min(self.max_delay_s, self.base_delay_s * 2.0**attempt)
        return self.jitter() * ceiling

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        started = self.clock()
        for attempt in range(self.attempts):
            try:
                return await operation()
            except Exception as exc:
                if attempt == self.attempts - 1 or not is_transient(exc):
                    raise
                delay = self.delay(attempt)
                if self.clock() - started + delay > self.total_s:
                    raise
                metrics.record(metrics.DB_RETRIES)
                await self.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

"""Waiting on an async condition with a deadline, and timing how long it took: how the tests
measure that a write is seen elsewhere within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool]], limit_s: float = 10.0) -> float:
    """Seconds until `condition` holds, polled every 10 ms; fails after `limit_s`."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"not within {limit_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started

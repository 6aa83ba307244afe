"""The breaker's half-open probe against a real database: it gets a fresh pool at once,
whatever state the pool it replaces is in."""

from __future__ import annotations

import asyncio

import pytest

from edgemart.breaker import CircuitBreaker
from edgemart.db import Database

pytestmark = pytest.mark.anyio
OPEN_TIMEOUT_S = 30.0


async def select_one(database: Database) -> object:
    async with database.connection() as conn:
        return await (await conn.execute("SELECT 1 AS one")).fetchone()


async def test_a_probe_does_not_wait_behind_the_pool_it_replaces(module_database_url: str) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "probe-test",
        failure_threshold=1,
        success_threshold=1,
        open_timeout_s=OPEN_TIMEOUT_S,
        clock=lambda: now[0],
    )
    database = Database(module_database_url, min_size=0, breaker=breaker)
    try:
        assert await select_one(database) == {"one": 1}
        old = await database.pool()
        breaker.record_failure()  # open
        now[0] += OPEN_TIMEOUT_S  # half-open: the next call is the probe
        # The old pool busy for good (its lock held, as by a task that never lets go):
        # the probe must neither wait for it nor leave the breaker waiting for the probe.
        await old._lock.acquire()
        try:
            probe = asyncio.ensure_future(select_one(database))
            done, _ = await asyncio.wait({probe}, timeout=5)
            assert done, "the probe waited behind the replaced pool"
            assert probe.result() == {"one": 1}
            assert breaker.state == "closed"
            assert await database.pool() is not old
        finally:
            old._lock.release()
    finally:
        await database.close()
    assert old.closed  # closed in the background once it let go

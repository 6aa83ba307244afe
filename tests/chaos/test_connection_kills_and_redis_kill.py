"""Chaos: under the mixed load, (1) every client connection to PostgreSQL is killed with
`pg_terminate_backend` twice a second for 8 s, then (2) the rate limiter's Redis is killed
for 5 s and restarted. Transient errors are retried, no order is duplicated, nothing answers
500; limits fall back to local while Redis is down and are shared again once it is back.
Servers are the test's own; loopback only; about 25 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest
import redis

from edgemart import metrics
from edgemart.services import Services
from tests.chaos.load import ChaosCatalog, MixedLoad, reported_ledger_problems
from tests.chaos.test_database_outage_under_load import (
    SECRET,
    chaos_settings,
    start_chaos_database,
)
from tests.conftest import RedisProcess, open_gateway, unused_port

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]
KILL_FOR_S = 8.0
REDIS_DOWN_S = 5.0
REDIS_BACK_WITHIN_S = 15.0

TERMINATE_SQL = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


async def first_second_all_shared(load: MixedLoad, *, within_s: float) -> float | None:
    """Seconds until a whole second passes in which requests were served and none of their
    rate-limit checks fell back to the local limiter; None if none does within `within_s`.

    One second, not a share of a fixed window: a single check that misses the limiter's 50 ms
    timeout (this one process runs the load generator and the server, and stalls now and then)
    sends the next second's checks to the local limiter by design, so a fixed window fails or
    passes on how many such stalls fall into it."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        fallbacks, served = metrics.count(metrics.RATE_LIMIT_FALLBACKS), load.total(load.phase)
        await asyncio.sleep(1.0)
        if (
            metrics.count(metrics.RATE_LIMIT_FALLBACKS) == fallbacks
            and load.total(load.phase) > served
        ):
            return round(time.monotonic() - started, 1)
    return None


async def kill_connections(url: str, seconds: float) -> int:
    """Terminate every other client backend of the database every 0.5 s; how many died."""
    killed = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(int(seconds / 0.5)):
            row = conn.execute(TERMINATE_SQL).fetchone()
            killed += int(row[0]) if row else 0
            await asyncio.sleep(0.5)
    return killed


async def test_connection_kills_then_redis_kill_under_load(tmp_path: Path) -> None:
    server, url = start_chaos_database(tmp_path / "pg")
    own_redis = RedisProcess(unused_port(), tmp_path)
    own_redis.start()
    catalog = ChaosCatalog.read(url)
    services = Services.from_settings(
        chaos_settings(
            url,
            redis_url=own_redis.url,
            # Limits on (and high enough never to refuse), so every request checks Redis.
            rate_limit_overrides=tuple(
                (g, 1_000_000, 60) for g in ("home", "search", "store", "purchases")
            ),
            circuit_failure_threshold=5,
        )
    )
    load = MixedLoad(catalog, SECRET, retry_purchases=True)
    fallbacks: dict[str, float] = {}
    try:
        async with open_gateway(services, base_url="http://t") as client:
            workers = await load.run(client)
            await asyncio.sleep(2)
            load.phase = "connection kills"
            killed = await kill_connections(url, KILL_FOR_S)
            load.phase = "redis down"
            fallbacks["before"] = metrics.count(metrics.RATE_LIMIT_FALLBACKS)
            own_redis.kill()
            await asyncio.sleep(REDIS_DOWN_S)
            fallbacks["down"] = metrics.count(metrics.RATE_LIMIT_FALLBACKS) - fallbacks["before"]
            own_redis.start()
            load.phase = "redis back"
            back_after_s = await first_second_all_shared(load, within_s=REDIS_BACK_WITHIN_S)
            keys_after = redis.Redis(port=own_redis.port).dbsize()
            await load.stop(workers)
    finally:
        own_redis.kill()
    try:
        problems = reported_ledger_problems(
            url,
            catalog,
            load,
            backends_killed=killed,
            fallback_checks=fallbacks,
            all_shared_again_after_s=back_after_s,
        )
        assert killed > 0
        assert load.undocumented_5xx() == []
        assert [o for counts in load.outcomes.values() for o in counts if o[1] == 500] == []
        assert load.total("connection kills", kind="purchase", status=201) > 0
        # Redis down: (almost) every check is local, and requests are still answered. Redis
        # back: checks are shared again (the restarted server, which keeps nothing on disk,
        # holds keys again), and a whole second passes in which every check is answered by it.
        assert fallbacks["down"] > 0.9 * load.total("redis down")
        assert load.total("redis down", kind="home", status=200) > 0
        assert back_after_s is not None and keys_after > 0
        assert problems == []  # retried purchases never bought twice; the ledger balances
    finally:
        server.cleanup()  # type: ignore[attr-defined]

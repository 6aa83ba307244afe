"""Chaos: PostgreSQL (a server this test starts) stops for 20 s under a mixed load of reads
and purchases, then comes back. Loopback only, bounded in time (about 35 s)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edgemart.cache import TTLCache
from edgemart.migrate import apply_migrations
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.democatalog import seed_catalog
from tests.chaos.load import ChaosCatalog, MixedLoad, reported_ledger_problems
from tests.conftest import DEMO_AS_OF, open_gateway, settings_for, start_embedded_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]
SECRET = "chaos-tests-secret-of-at-least-32-bytes!"
OUTAGE_S = 20.0


def chaos_settings(url: str, **overrides: object) -> Settings:
    """Short timeouts and a quick breaker, so a 20 s outage shows every state; no rate limits
    unless a test sets them."""
    values: dict[str, object] = {
        "jwt_secret": SECRET,
        "db_pool_timeout_s": 1.0,
        "health_db_timeout_s": 1.0,
        "rate_limit_overrides": tuple((g, 0, 60) for g in ("home", "search", "store", "purchases")),
        "circuit_failure_threshold": 3,
        "circuit_success_threshold": 1,
        "circuit_open_timeout_s": 2.0,
    }
    values.update(overrides)
    return settings_for(url, **values)


def start_chaos_database(directory: Path) -> tuple[object, str]:
    """A PostgreSQL of the test's own, migrated, with a small catalog and 20 funded buyers."""
    server = start_embedded_postgres(directory)
    url = str(server.get_uri())  # type: ignore[attr-defined]
    apply_migrations(url)
    seed_catalog(url, products=300, stores=5, seed=4, as_of=DEMO_AS_OF, buyers=20)
    return server, url


async def test_outage_under_load(tmp_path: Path) -> None:
    server, url = start_chaos_database(tmp_path / "pg")
    catalog = ChaosCatalog.read(url)
    services = Services.from_settings(chaos_settings(url))
    # The L1 cache reads a clock the test moves a minute ahead when the outage starts, so
    # every cached copy has expired and the outage is served from last-known-good (stale).
    skew = {"s": 0.0}
    services.cache = TTLCache(clock=lambda: time.time() + skew["s"])
    load = MixedLoad(catalog, SECRET)
    async with open_gateway(services, base_url="http://t") as client:
        workers = await load.run(client)
        await asyncio.sleep(3)
        server.cleanup()  # type: ignore[attr-defined]  # synchronous: stopped when it returns
        load.phase = "outage"
        skew["s"] = 3600.0
        await asyncio.sleep(OUTAGE_S)
        server = start_embedded_postgres(tmp_path / "pg")
        back_at = time.monotonic()
        load.phase = "after"
        closed_after_s = None
        while time.monotonic() - back_at < 10:
            await asyncio.sleep(0.2)
            if services.primary.breaker and services.primary.breaker.state == "closed":
                closed_after_s = round(time.monotonic() - back_at, 1)
                break
        await asyncio.sleep(3)
        await load.stop(workers)
    try:
        problems = reported_ledger_problems(
            url, catalog, load, circuit_closed_after_s=closed_after_s
        )
        assert closed_after_s is not None, "the circuit did not close after the restart"
        # No 5xx but the documented 503s, ever; reads during the outage answer from cache.
        assert load.undocumented_5xx() == []
        assert load.total("outage", kind="home", status=200) > 0
        assert load.with_code("outage", "stale") > 0
        assert load.total("outage", kind="home", status=200) == sum(
            n for (k, s, c), n in load.outcomes["outage"].items() if k == "home" and c == "stale"
        )
        assert load.total("outage", kind="purchase", status=201) == 0
        assert load.with_code("outage", "read_only_mode") > 0
        assert load.total("after", kind="purchase", status=201) > 0
        assert problems == []  # the ledger balances and no order is half-written
    finally:
        server.cleanup()  # type: ignore[attr-defined]

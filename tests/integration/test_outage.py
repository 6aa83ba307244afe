"""A PostgreSQL of the test's own is stopped and restarted: reads go stale, writes are
refused cleanly, the circuit opens, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import jwt
import psycopg
import pytest

from edgemart.cache import TTLCache
from edgemart.migrate import apply_migrations
from edgemart.services import Services
from gateway.democatalog import seed_catalog
from tests.conftest import (
    DEMO_AS_OF,
    FakeClock,
    open_gateway,
    settings_for,
    start_embedded_postgres,
)

pytestmark = pytest.mark.anyio
SECRET = "outage-tests-secret-of-at-least-32-bytes"


async def test_database_outage_and_recovery(tmp_path: Path) -> None:
    server = start_embedded_postgres(tmp_path / "pg")
    url = str(server.get_uri())  # type: ignore[attr-defined]
    apply_migrations(url)
    seed_catalog(url, products=200, stores=5, seed=2, as_of=DEMO_AS_OF)
    settings = dataclasses.replace(
        settings_for(url, jwt_secret=SECRET, db_pool_timeout_s=1.0, health_db_timeout_s=1.0),
        circuit_failure_threshold=2,
        circuit_success_threshold=1,
        circuit_open_timeout_s=1.0,
    )
    services = Services.from_settings(settings)
    clock = FakeClock(time.time())
    services.cache = TTLCache(clock=clock)
    token = jwt.encode({"sub": "buyer-1", "exp": int(time.time()) + 600}, SECRET)
    try:
        async with open_gateway(services, base_url="http://t") as client:
            fresh = await client.get("/marketplace/home")
            assert fresh.status_code == 200 and "x-edgemart-stale" not in fresh.headers
            with psycopg.connect(url) as conn:
                product = conn.execute(
                    "SELECT id::text FROM products WHERE stock > 0 AND is_available LIMIT 1"
                ).fetchone()
            assert product is not None

            server.cleanup()  # type: ignore[attr-defined]  # PostgreSQL stops
            clock.now += 120  # the cached home page is now past its TTL

            stale = await client.get("/marketplace/home")
            assert stale.status_code == 200 and stale.content == fresh.content
            assert stale.headers["x-edgemart-stale"] == "true"
            assert int(stale.headers["age"]) >= 120
            refused = await client.post(
                "/purchases",
                json={"product_id": product[0], "quantity": 1},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            )
            assert refused.status_code == 503 and refused.json()["code"] == "read_only_mode"
            assert int(refused.headers["retry-after"]) >= 1
            uncached = await client.get("/marketplace/search", params={"q": "lamp"})
            assert uncached.status_code == 503
            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["checks"]["circuit"]["state"] == "open"

            server = start_embedded_postgres(tmp_path / "pg")  # PostgreSQL is back
            await asyncio.sleep(1.1)  # the open timeout passes; the next call is the probe
            deadline = time.monotonic() + 20
            while (await client.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, "the circuit did not close"
                await asyncio.sleep(0.5)
            assert services.primary.breaker is not None
            assert services.primary.breaker.state == "closed"
            bought = await client.post(
                "/purchases",
                json={"product_id": product[0], "quantity": 1},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            )
            assert bought.status_code == 201
    finally:
        server.cleanup()  # type: ignore[attr-defined]


async def test_a_lock_wait_timeout_is_not_a_database_failure(migrated_database_url: str) -> None:
    """55P03 (a concurrent request holds the row or key) is contention, not an outage: the
    circuit must not open because buyers collide on one idempotency key."""
    services = Services.from_settings(
        dataclasses.replace(settings_for(migrated_database_url), circuit_failure_threshold=1)
    )
    try:
        with psycopg.connect(migrated_database_url) as holder:
            holder.execute("SELECT pg_advisory_lock(42)")
            for _ in range(3):
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    async with services.primary.connection() as conn, conn.transaction():
                        await conn.execute("SET LOCAL lock_timeout = '20ms'")
                        await conn.execute("SELECT pg_advisory_xact_lock(42)")
        assert services.primary.breaker is not None
        assert services.primary.breaker.state == "closed"
    finally:
        await services.aclose()

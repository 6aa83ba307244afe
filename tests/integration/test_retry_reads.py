"""A read whose connection is killed mid-query is retried and still answers 200."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest

from edgemart import metrics
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


async def test_killed_connection_mid_read_is_retried(catalog_database_url: str) -> None:
    url = catalog_database_url
    services = Services.from_settings(settings_for(url))
    transport = httpx.ASGITransport(app=create_gateway(services))
    blocker = await psycopg.AsyncConnection.connect(url)
    retries_before = metrics.count(metrics.DB_RETRIES)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await blocker.execute("LOCK TABLE home_snapshot IN ACCESS EXCLUSIVE MODE")
            request = asyncio.create_task(client.get("/marketplace/home"))
            waiting = None
            for _ in range(250):
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as probe:
                    row = await (
                        await probe.execute(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query LIKE '%%home_snapshot%%'"
                        )
                    ).fetchone()
                if row:
                    waiting = row[0]
                    break
                await asyncio.sleep(0.02)
            assert waiting, "the home query never waited on the lock"
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as killer:
                await killer.execute("SELECT pg_terminate_backend(%s)", [waiting])
            await blocker.commit()  # the retry finds the table free
            response = await request
        assert response.status_code == 200
        assert "x-edgemart-stale" not in response.headers
        assert metrics.count(metrics.DB_RETRIES) == retries_before + 1
    finally:
        await blocker.close()
        await services.aclose()

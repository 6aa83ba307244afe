"""GET /health and /health/live through the gateway, with the database up, stopped and absent."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for, start_embedded_postgres, unused_port

pytestmark = pytest.mark.anyio


async def test_health_is_200_with_the_documented_body(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.get("/health")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"status", "version", "timestamp", "checks"}
    assert body["status"] == "healthy"
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert body["checks"]["rate_limit_backend"] == {"ok": True, "backend": "memory"}
    assert body["checks"]["circuit"] == {"state": "closed"}


async def test_live_touches_nothing(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def gateway_for(database_url: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    services = Services.from_settings(settings_for(database_url, health_db_timeout_s=1.0))
    return open_gateway(services, base_url="http://t")


async def test_health_is_503_when_the_database_is_unreachable() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    async with gateway_for(dead) as client:
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert body["checks"]["database"] == {"ok": False, "latency_ms": None}
        assert (await client.get("/health/live")).status_code == 200


async def test_health_turns_503_when_a_running_database_stops(tmp_path: Path) -> None:
    """A PostgreSQL of this test's own, really stopped mid-test."""
    server = start_embedded_postgres(tmp_path / "pg")
    try:
        async with gateway_for(server.get_uri()) as client:  # type: ignore[attr-defined]
            assert (await client.get("/health")).status_code == 200
            server.cleanup()  # type: ignore[attr-defined]
            response = await client.get("/health")
            assert response.status_code == 503
            assert response.json()["checks"]["database"]["ok"] is False
    finally:
        server.cleanup()  # type: ignore[attr-defined]


async def test_a_shared_limiter_outage_is_reported_but_not_fatal(module_database_url: str) -> None:
    """Requests fall back to the local limiter, so the instance stays in service (200)."""
    dead_redis = f"redis://127.0.0.1:{unused_port()}/0"
    services = Services.from_settings(settings_for(module_database_url, redis_url=dead_redis))
    async with open_gateway(services, base_url="http://t") as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["rate_limit_backend"] == {"ok": False, "backend": "redis"}

"""The gateway's in-process scheduler runs jobs on their interval and survives failures."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from gateway.scheduler import Schedule, running
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


async def test_jobs_run_on_schedule_with_a_scheduled_event(catalog_database_url: str) -> None:
    services = Services.from_settings(settings_for(catalog_database_url))
    events: list[Mapping[str, Any]] = []
    reports: list[dict[str, Any]] = []

    async def refresh(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
        events.append(event)
        reports.append(await refresh_views(services, event))
        if len(events) == 1:
            raise RuntimeError("one failed run must not stop the schedule")
        return reports[-1]

    try:
        async with running([Schedule("refresh_views", refresh, 0.1)], services):
            await asyncio.sleep(0.55)
    finally:
        await services.aclose()
    assert len(events) >= 3
    assert all(e["detail-type"] == "Scheduled Event" for e in events)
    assert all(r["status"] == "refreshed" for r in reports)


async def test_heartbeat_opens_the_circuit_without_traffic() -> None:
    import dataclasses

    from gateway.scheduler import heartbeat
    from tests.conftest import unused_port

    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    settings = dataclasses.replace(
        settings_for(dead, db_pool_timeout_s=0.3), circuit_failure_threshold=2
    )
    services = Services.from_settings(settings)
    try:
        async with running([Schedule("heartbeat", heartbeat, 0.05)], services):
            for _ in range(100):
                await asyncio.sleep(0.05)
                if services.primary.breaker and services.primary.breaker.state == "open":
                    break
        assert services.primary.breaker is not None
        assert services.primary.breaker.state == "open"
    finally:
        await services.aclose()

"""The gateway's in-process scheduler runs jobs on their interval and survives failures; of
several processes on one database only the holder of the scheduler lease runs them, while
the heartbeat runs in every one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import pytest

from edgemart.logging import current_log_keys
from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from gateway.scheduler import Schedule, running, running_when_leader
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


async def test_the_heartbeat_runs_in_a_process_that_does_not_lead() -> None:
    """A gateway that cannot reach its database never leads, yet its heartbeat still probes
    (and opens the circuit). The lease's own requests cannot open it in that time: one at
    start, then one every five seconds."""
    import dataclasses

    from gateway.app import create_gateway
    from tests.conftest import unused_port

    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    settings = dataclasses.replace(
        settings_for(dead, db_pool_timeout_s=0.2, schedule_intervals=(("heartbeat", 0.05),)),
        circuit_failure_threshold=4,
    )
    services = Services.from_settings(settings)
    app = create_gateway(services, run_schedules=True)
    breaker = services.primary.breaker
    assert breaker is not None
    async with app.router.lifespan_context(app):
        for _ in range(100):
            await asyncio.sleep(0.05)
            if breaker.state == "open":
                break
    assert breaker.state == "open"


async def test_only_the_leader_runs_the_schedules_and_another_takes_over(
    migrated_database_url: str,
) -> None:
    """Two processes' worth of scheduler (each its own pools) on one database: the leader's
    jobs run, tagged with its lease term, the standby's never; once the leader stops (and
    gives its lease up) the other runs them under the next term."""
    runs: dict[str, list[object]] = {"first": [], "second": []}

    def counting(process: str) -> Schedule:
        async def job(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
            runs[process].append(current_log_keys().get("lease_term"))
            return {}

        return Schedule("count", job, 0.02)

    async def wait_for(condition: Any) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the condition did not come true")

    every = [
        Services.from_settings(settings_for(migrated_database_url, scheduler_lease_ttl_s=3))
        for _ in range(2)
    ]
    try:
        async with AsyncExitStack() as first:
            leader = await first.enter_async_context(
                running_when_leader([counting("first")], every[0], holder="first")
            )
            await wait_for(lambda: len(runs["first"]) >= 3)
            async with running_when_leader(
                [counting("second")], every[1], holder="second"
            ) as standby:
                await asyncio.sleep(1.5)  # a standby's turn (1 s) and more
                assert runs["second"] == [] and not standby.leading()
                assert set(runs["first"]) == {leader.term}
                await first.aclose()  # the leader stops (a worker's shutdown)
                stopped_at = len(runs["first"])
                await wait_for(lambda: len(runs["second"]) >= 3)
                assert standby.leading() and len(runs["first"]) == stopped_at
                assert set(runs["second"]) == {standby.term}
                assert standby.term == (leader.term or 0) + 1
    finally:
        for services in every:
            await services.aclose()


async def test_a_new_leader_keeps_the_fleets_period(migrated_database_url: str) -> None:
    """A schedule the fleet last started 1.5 s ago, every 2 s, runs about 0.5 s after this
    process takes the lead; one never run waits its whole interval; each start is recorded."""
    import psycopg

    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schedule_runs (name, started_at) "
            "VALUES ('due', clock_timestamp() - interval '1.5 seconds')"
        )
    first_runs: dict[str, float] = {}

    def schedule(name: str) -> Schedule:
        async def job(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
            first_runs.setdefault(name, time.monotonic())
            return {}

        return Schedule(name, job, 2.0)

    services = Services.from_settings(settings_for(migrated_database_url))
    try:
        started = time.monotonic()
        async with running_when_leader([schedule("due"), schedule("new")], services):
            for _ in range(400):
                if len(first_runs) == 2:
                    break
                await asyncio.sleep(0.01)
    finally:
        await services.aclose()
    assert first_runs["due"] - started < 1.5
    assert first_runs["new"] - started >= 2.0
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        recorded = conn.execute(
            "SELECT name, clock_timestamp() - started_at < interval '5 seconds' "
            "FROM schedule_runs ORDER BY name"
        ).fetchall()
    assert recorded == [("due", True), ("new", True)]

"""The gateway's in-process scheduler runs jobs on their interval and survives failures; of
several workers, only the one holding the scheduler lock runs them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from gateway.scheduler import Schedule, SchedulerLock, running, running_when_leader
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


def test_the_scheduler_lock_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = SchedulerLock(tmp_path / "lock"), SchedulerLock(tmp_path / "lock")
    assert first.try_acquire()
    assert first.try_acquire()  # already held: still ours
    assert not second.try_acquire()
    first.release()
    assert not first.held
    assert second.try_acquire()
    second.release()


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"descriptor = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(descriptor, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        lock = SchedulerLock(path)
        assert not lock.try_acquire()
    finally:
        holder.kill()
        holder.communicate()
    assert lock.try_acquire()
    lock.release()


async def test_only_the_leader_runs_the_schedules_and_another_takes_over(
    tmp_path: Path,
) -> None:
    services = Services.from_settings(settings_for(None))
    runs = {"first": 0, "second": 0}

    def counting(worker: str) -> Schedule:
        async def job(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
            runs[worker] += 1
            return {}

        return Schedule("count", job, 0.01)

    async def wait_for(condition: Any) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the condition did not come true")

    first_lock, second_lock = SchedulerLock(tmp_path / "lock"), SchedulerLock(tmp_path / "lock")
    try:
        async with AsyncExitStack() as first:
            await first.enter_async_context(
                running_when_leader([counting("first")], services, first_lock, 0.01)
            )
            await wait_for(lambda: first_lock.held)
            async with running_when_leader([counting("second")], services, second_lock, 0.01):
                await wait_for(lambda: runs["first"] >= 3)
                assert runs["second"] == 0 and not second_lock.held
                await first.aclose()  # the leader stops (a worker's shutdown)
                stopped_at = runs["first"]
                await wait_for(lambda: runs["second"] >= 3)
                assert second_lock.held and runs["first"] == stopped_at
        assert not first_lock.held and not second_lock.held
    finally:
        await services.aclose()

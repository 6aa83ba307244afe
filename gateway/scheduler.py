"""The gateway's local stand-in for EventBridge: scheduled functions run in-process on their
schedules, through the same job coroutine their Lambda handler runs, with a scheduled-event
payload.

Under `edgemart serve --workers N` one worker runs them: the one holding the serve run's
`SchedulerLock`. Every worker asks for it at start-up and again every `LEADER_RETRY_S`; the
kernel frees it when its holder exits however it ends, so another worker takes over within
that time. This elects one process per host, not one per fleet: several hosts each running
`serve` each run the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgemart.jobs import Job
from edgemart.logging import logger
from edgemart.services import Services


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    job: Job
    every_s: float


def scheduled_event(name: str) -> Mapping[str, Any]:
    return {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": [f"arn:aws:events:local:000000000000:rule/{name}"],
        "detail": {},
    }


async def _run_forever(schedule: Schedule, services: Services) -> None:
    while True:
        await asyncio.sleep(schedule.every_s)
        try:
            await schedule.job(services, scheduled_event(schedule.name))
        except Exception:
            logger.exception("scheduled job %s failed; it runs again next time", schedule.name)


@contextlib.asynccontextmanager
async def running(schedules: list[Schedule], services: Services) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(_run_forever(s, services)) for s in schedules]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


LEADER_RETRY_S = 5.0


class SchedulerLock:
    """An exclusive lock on one file (flock), taken without waiting and held until released
    or until the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def try_acquire(self) -> bool:
        if self._descriptor is not None:
            return True
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing the last descriptor releases the lock


@contextlib.asynccontextmanager
async def running_when_leader(
    schedules: list[Schedule],
    services: Services,
    lock: SchedulerLock,
    retry_s: float = LEADER_RETRY_S,
) -> AsyncIterator[None]:
    """`running`, once and for as long as this process holds `lock`."""

    async def lead() -> None:
        while not lock.try_acquire():
            await asyncio.sleep(retry_s)
        logger.info("scheduled jobs run in this worker (pid %d)", os.getpid())
        async with running(schedules, services):
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(lead())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lock.release()


HEARTBEAT_EVERY_S = 10.0


async def heartbeat(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    """`SELECT 1` through the pool and its circuit breaker, so the gateway notices an outage
    (and a recovery: the heartbeat is the half-open probe) even with no traffic. Lambda has no
    such loop: there, request outcomes drive the breaker."""
    from edgemart.db import UNAVAILABLE_ERRORS

    try:
        async with services.primary.connection() as conn:
            await conn.execute("SELECT 1")
    except UNAVAILABLE_ERRORS as exc:
        return {"database": "unavailable", "error": type(exc).__name__}
    return {"database": "ok"}


def default_schedules() -> list[Schedule]:
    from functions.maintenance.app import maintenance
    from functions.refresh_views.app import refresh_views
    from functions.score_listings.app import score_listings

    return [
        Schedule("heartbeat", heartbeat, HEARTBEAT_EVERY_S),
        Schedule("refresh_views", refresh_views, 300),
        Schedule("maintenance", maintenance, 86_400),
        Schedule("score_listings", score_listings, 60),
    ]

"""The gateway's local stand-in for EventBridge: scheduled functions run in-process on their
schedules, through the same job coroutine their Lambda handler runs, with a scheduled-event
payload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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

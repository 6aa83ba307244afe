"""The gateway's local stand-in for EventBridge: scheduled functions run in-process on their
schedules, through the same job coroutine their Lambda handler runs, with a scheduled-event
payload.

EventBridge runs each schedule once for the whole deployment; so does the gateway, however
many processes run it (`serve --workers N`, several hosts or containers on one database):
the jobs run in one process, the fleet's leader, the holder of the `scheduler` lease
(gateway.leadership). Every process takes part; when the leader dies a standby takes over
within `SCHEDULER_LEASE_TTL_S` and a little. The heartbeat is the exception: it is each
process's own database probe, so it runs in every process.

A schedule's period is the fleet's: the leader records when each run starts
(`schedule_runs`, by the database's clock), and a process that takes the lead runs each job
when its interval since that last start is up (at once if overdue; one interval after taking
the lead for a job never run). Then every interval after a run ends; `SCHEDULE_INTERVALS`
replaces intervals. The heartbeat first runs one interval after its process starts. Runs may
overlap across a change of leader (a job still finishing in a process that just lost the
lease, or paused past its deadline): every job tolerates that (decision 0005).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from edgemart.jobs import Job
from edgemart.logging import logger, request_log_keys
from edgemart.services import Services
from edgemart.settings import DECLARED, SettingsError
from gateway.leadership import DatabaseLease, Leadership, holder_id, leading
from gateway.lease import LeaseTimings

SCHEDULER_LEASE = "scheduler"


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    job: Job
    every_s: float
    in_every_process: bool = False
    """Runs in every process rather than in the fleet's leader only."""


def scheduled_event(name: str) -> Mapping[str, Any]:
    return {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": [f"arn:aws:events:local:000000000000:rule/{name}"],
        "detail": {},
    }


OnStart = Callable[[Schedule], Awaitable[None]]


async def _run_forever(
    schedule: Schedule,
    services: Services,
    first_delay_s: float,
    may_run: Callable[[], bool] | None,
    on_start: OnStart | None,
) -> None:
    delay = first_delay_s
    while True:
        await asyncio.sleep(delay)
        delay = schedule.every_s
        if may_run is not None and not may_run():
            continue  # past the leader's deadline: its work is about to be cancelled
        try:
            if on_start is not None:
                await on_start(schedule)
            await schedule.job(services, scheduled_event(schedule.name))
        except Exception:
            logger.exception("scheduled job %s failed; it runs again next time", schedule.name)


@contextlib.asynccontextmanager
async def running(
    schedules: list[Schedule],
    services: Services,
    *,
    first_delays: Mapping[str, float] | None = None,
    may_run: Callable[[], bool] | None = None,
    on_start: OnStart | None = None,
    log_keys: Mapping[str, object] | None = None,
) -> AsyncIterator[None]:
    """Run `schedules` while the block runs: each first after its `first_delays` entry (its
    interval when it has none), then every interval after a run ends. `may_run` is asked
    before each run (a run it refuses is skipped), `on_start` awaited as one starts; `log_keys`
    go on every log line of the runs."""
    delays = first_delays or {}
    with request_log_keys(**(log_keys or {})):  # the tasks copy the context they start in
        tasks = [
            asyncio.create_task(
                _run_forever(s, services, delays.get(s.name, s.every_s), may_run, on_start)
            )
            for s in schedules
        ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_when_leader(
    schedules: list[Schedule], services: Services, *, holder: str | None = None
) -> AsyncIterator[Leadership]:
    """`running`, whenever and for as long as this process holds the scheduler lease (on
    `services.primary`, for `SCHEDULER_LEASE_TTL_S`). Each run's log lines carry the lease's
    term, which names one leader's tenure."""

    runs = ScheduleRuns(services)

    async def work(leadership: Leadership) -> None:
        async with running(
            schedules,
            services,
            first_delays=await runs.first_delays(schedules),
            may_run=leadership.leading,
            on_start=runs.started,
            log_keys={"lease_term": leadership.term},
        ):
            await asyncio.Event().wait()  # until cancelled

    ttl_s = services.settings.scheduler_lease_ttl_s
    lease = DatabaseLease(services.primary, SCHEDULER_LEASE, holder or holder_id(), ttl_s)
    async with leading(work, lease, LeaseTimings(ttl_s)) as leadership:
        yield leadership


def first_delay(every_s: float, since_last_start_s: float | None) -> float:
    """Pure: how long a new leader waits before a schedule's first run, given how long ago
    the fleet last started one (None: never, or unknown): until its interval since then is
    up, at once if overdue, never longer than one interval (a start dated ahead by a clock
    that went back)."""
    if since_last_start_s is None:
        return every_s
    return min(every_s, max(0.0, every_s - since_last_start_s))


class ScheduleRuns:
    """The fleet's record of when each leader-only schedule last started (`schedule_runs`)."""

    def __init__(self, services: Services) -> None:
        self.database = services.primary

    async def first_delays(self, schedules: list[Schedule]) -> dict[str, float]:
        """Each schedule's wait before a new leader's first run; without an answer from the
        database, each waits its interval."""
        try:
            async with self.database.connection() as conn:
                cursor = await conn.execute(
                    "SELECT name, extract(epoch FROM clock_timestamp() - started_at)::float8 "
                    "AS since FROM schedule_runs WHERE name = ANY(%s)",
                    [[schedule.name for schedule in schedules]],
                )
                since = {row["name"]: row["since"] for row in await cursor.fetchall()}
        except Exception as exc:
            logger.warning("could not read when the schedules last ran (%r)", exc)
            since = {}
        return {s.name: first_delay(s.every_s, since.get(s.name)) for s in schedules}

    async def started(self, schedule: Schedule) -> None:
        """Record that `schedule` starts a run now (a failure is logged; the run goes on)."""
        try:
            async with self.database.connection() as conn:
                await conn.execute(
                    "INSERT INTO schedule_runs (name, started_at) VALUES (%s, clock_timestamp()) "
                    "ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at",
                    [schedule.name],
                )
        except Exception as exc:
            logger.warning("could not record the start of %s (%r)", schedule.name, exc)


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
    """The scheduled functions at EventBridge's rates (template.yaml), and the heartbeat."""
    from functions.maintenance.app import maintenance
    from functions.refresh_views.app import refresh_views
    from functions.score_listings.app import score_listings

    return [
        Schedule("heartbeat", heartbeat, HEARTBEAT_EVERY_S, in_every_process=True),
        Schedule("refresh_views", refresh_views, 300),
        Schedule("maintenance", maintenance, 86_400),
        Schedule("score_listings", score_listings, 60),
    ]


ORDER_WORKER = "order_worker"


def gateway_schedules(services: Services) -> list[Schedule]:
    """What the gateway runs: the default schedules and, when queued purchases are on, the
    SQS poller, at the intervals `SCHEDULE_INTERVALS` sets. A name there that is none of
    these (the poller's included, on or off) is a SettingsError."""
    from gateway.sqspoller import POLL_EVERY_S, poll_purchase_queue

    schedules = default_schedules()
    schedules.append(Schedule(ORDER_WORKER, poll_purchase_queue, POLL_EVERY_S))
    intervals = dict(services.settings.schedule_intervals)
    unknown = sorted(intervals.keys() - {schedule.name for schedule in schedules})
    if unknown:
        variable = next(d.variable for d in DECLARED if d.name == "schedule_intervals")
        raise SettingsError(
            f"{variable} names {', '.join(unknown)}, which the gateway does not schedule "
            f"(its schedules: {', '.join(schedule.name for schedule in schedules)})"
        )
    return [
        replace(schedule, every_s=intervals.get(schedule.name, schedule.every_s))
        for schedule in schedules
        if schedule.name != ORDER_WORKER or services.purchase_queue is not None
    ]

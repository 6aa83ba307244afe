"""One leader per fleet: of all the processes sharing a database, the holder of a lease row
does the work only one of them should (the gateway's scheduled jobs, gateway.scheduler).

Every process runs `Leadership.run`: it asks the database for the lease (sql/acquire_lease.sql,
one autocommit statement through the primary's pool, so it works through any pooler), renews
it while it holds it, and runs the leader's work in a task for exactly as long as
gateway.lease's state machine says it leads, cancelling it at the deadline if a renewal has
not succeeded by then. A process killed outright (SIGKILL, a lost host) simply stops renewing:
its lease ends one ttl after its last renewal and a standby takes it. A process that stops
cleanly cancels its work first and then gives the lease up (sql/release_lease.sql), so a
standby takes over at its next request. docs/decisions/0033-scheduler-leader.md.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from edgemart import metrics
from edgemart.db import Database
from edgemart.logging import ThrottledWarning, logger
from gateway.lease import Answer, LeaseState, LeaseTimings

Clock = Callable[[], float]
Work = Callable[["Leadership"], Coroutine[Any, Any, None]]
"""What the leader does, as long as it leads: cancelled when it stops leading."""

RELEASE_TIMEOUT_S = 2.0
WORK_STOP_WAIT_S = 5.0
"""How long a clean stop waits for the cancelled work to end before giving the lease up."""

T = TypeVar("T")


async def within(coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """`coroutine`'s result if it comes within `timeout_s`, else TimeoutError at once.

    Unlike `asyncio.timeout`, this does not wait for the cancelled call to end: psycopg,
    cancelled in the middle of a query, first asks the server to cancel it and waits for
    that (up to ten seconds on a connection that no longer answers), and a leader must stop
    at its deadline, not that much later. The call ends on its own in the background.
    """
    task = asyncio.ensure_future(coroutine)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        raise TimeoutError(f"no answer within {timeout_s:.1f} s")
    return task.result()


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    # Its outcome is of no interest any more; retrieving it keeps asyncio from logging it.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


def holder_id() -> str:
    """This process's name as a lease holder: host and pid for people, and a random part,
    since containers share pids (each one's server is often pid 1) and may share host names."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class DatabaseLease:
    """One named lease in the `leases` table, asked for by one holder."""

    def __init__(self, database: Database, name: str, holder: str, ttl_s: float) -> None:
        self.database = database
        self.name = name
        self.holder = holder
        self.ttl = timedelta(seconds=ttl_s)

    async def acquire(self) -> Answer:
        """Take or renew the lease; who holds it afterwards."""
        async with self.database.connection() as conn:
            cursor = await conn.execute(
                "SELECT held, term, holder, expires_in FROM acquire_lease(%s, %s, %s)",
                [self.name, self.holder, self.ttl],
            )
            row = await cursor.fetchone()
        if row is None:  # another process created the row in the meantime
            return Answer(held=False)
        return Answer(row["held"], row["term"], row["holder"], row["expires_in"])

    async def release(self) -> bool:
        """Give the lease up if this holder has it; whether it had."""
        async with self.database.connection() as conn:
            cursor = await conn.execute(
                "SELECT release_lease(%s, %s) AS released", [self.name, self.holder]
            )
            row = await cursor.fetchone()
        return bool(row and row["released"])


class Leadership:
    """This process's part in electing one leader: its lease, its state, and the leader's
    work while it leads."""

    def __init__(
        self, lease: DatabaseLease, timings: LeaseTimings, *, clock: Clock = time.monotonic
    ) -> None:
        self.lease = lease
        self.state = LeaseState(timings)
        self.clock = clock
        self._work: asyncio.Task[None] | None = None
        self._work_term: int | None = None
        self._accounted_at = 0.0
        self._announced_standby = False
        self._failures = ThrottledWarning(
            f"could not ask for the {lease.name} lease (%r); a leader leads on only until "
            "its deadline"
        )

    def leading(self) -> bool:
        """Whether this process may act as the leader now: what the work checks before each
        step only the leader should take."""
        return self.state.leading(self.clock())

    @property
    def term(self) -> int | None:
        return self.state.term

    async def run(self, work: Work) -> None:
        """Ask, renew and lead until cancelled; the work is cancelled with it (`release`
        then gives the lease up)."""
        try:
            while True:
                await self._follow(work)  # first: a deadline passed while asleep stops it
                if self.state.due(self.clock()):
                    await self._ask()
                    await self._follow(work)
                now = self.clock()
                await asyncio.sleep(max(0.0, self.state.wake_at(now) - now))
        finally:
            if await self._stop_work(WORK_STOP_WAIT_S):
                logger.info(
                    "this process stops leading (%s lease): it is stopping", self.lease.name
                )

    async def release(self) -> None:
        """Give the lease up (a clean shutdown), so a standby takes it at its next request
        rather than one ttl later. Called once the work has stopped; also when this process
        never saw itself lead, since a request cancelled in flight may have been granted."""
        self.state.released(self.clock())
        try:
            released = await within(self.lease.release(), RELEASE_TIMEOUT_S)
        except Exception as exc:
            logger.warning("could not release the %s lease (%r)", self.lease.name, exc)
            return
        if released:
            metrics.record(metrics.LEADERSHIP_CHANGES, lease=self.lease.name, change="released")
            logger.info("released the %s lease", self.lease.name)

    async def _ask(self) -> None:
        sent_at = self.clock()
        try:
            answer = await within(self.lease.acquire(), self.state.attempt_timeout(sent_at))
        except Exception as exc:  # unreachable, too slow, or refused by the breaker
            self._failures.note(exc)
            self.state.failed(self.clock())
            return
        self.state.answered(sent_at, self.clock(), answer)
        if not answer.held and not self._announced_standby:
            self._announced_standby = True
            logger.info(
                "another process leads (%s lease held by %s); this one stands by",
                self.lease.name,
                answer.holder,
            )

    async def _follow(self, work: Work) -> None:
        """Make the work run exactly while the state says this process leads, restarting it
        when the term changed (the lease lapsed and was taken again); account the time."""
        now = self.clock()
        self._account(now)
        leading = self.state.leading(now)
        if self._work is not None and (not leading or self._work_term != self.state.term):
            await self._stop_work(0.0)  # cancelled; a job may take a moment to end (0005)
            metrics.record(metrics.LEADERSHIP_CHANGES, lease=self.lease.name, change="lost")
            logger.warning(
                "this process stops leading (%s lease, term %s): its lease was not renewed in time",
                self.lease.name,
                self._work_term,
            )
        if leading and self._work is None:
            self._start_work(work, now)

    def _start_work(self, work: Work, now: float) -> None:
        self._accounted_at = now
        self._announced_standby = False
        self._work_term = self.state.term
        self._work = asyncio.create_task(work(self))
        metrics.record(metrics.LEADERSHIP_CHANGES, lease=self.lease.name, change="acquired")
        logger.info(
            "this process leads: it holds the %s lease (pid %d, term %s)",
            self.lease.name,
            os.getpid(),
            self.state.term,
            extra={"lease_holder": self.lease.holder, "lease_term": self.state.term},
        )

    def _account(self, now: float) -> None:
        """Add the time led since the last call (up to the deadline) to LEADER_TIME."""
        if self._work is None:
            return
        end = min(now, self.state.leading_until)
        if end > self._accounted_at:
            metrics.record(metrics.LEADER_TIME, end - self._accounted_at, lease=self.lease.name)
            self._accounted_at = end

    async def _stop_work(self, wait_s: float) -> bool:
        """Cancel the work and wait up to `wait_s` for it to end; whether there was any."""
        task, self._work = self._work, None
        if task is None:
            return False
        _abandon(task)
        if wait_s > 0:
            await asyncio.wait({task}, timeout=wait_s)
        return True


@asynccontextmanager
async def leading(
    work: Work, lease: DatabaseLease, timings: LeaseTimings, *, clock: Clock = time.monotonic
) -> AsyncIterator[Leadership]:
    """Take part in the election while the block runs: `work` runs whenever this process
    leads. At the end the work is cancelled and then the lease given up."""
    leadership = Leadership(lease, timings, clock=clock)
    task = asyncio.create_task(leadership.run(work))
    try:
        yield leadership
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await leadership.release()

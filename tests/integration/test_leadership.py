"""The lease in the real database (sql/acquire_lease.sql, sql/release_lease.sql) and
`Leadership` on it: who gets it, renewals, expiry, terms, concurrent askers, release; a
leader cut off from the database stops before a standby starts; a clean stop hands over at
once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from edgemart.db import Database
from gateway.leadership import DatabaseLease, Leadership, leading
from gateway.lease import LeaseTimings
from tests.support.sql import sql

Row = tuple[bool, int, str, float]


def acquire(url: str, holder: str, ttl_s: float, name: str = "test") -> Row:
    [row] = sql(
        url,
        "SELECT held, term, holder, expires_in FROM acquire_lease(%s, %s, %s)",
        name,
        holder,
        timedelta(seconds=ttl_s),
    )
    return (bool(row[0]), int(row[1]), str(row[2]), float(row[3]))


def release(url: str, holder: str, name: str = "test") -> bool:
    [(released,)] = sql(url, "SELECT release_lease(%s, %s)", name, holder)
    return bool(released)


def expired(url: str, holder: str) -> None:
    """`holder` takes the free lease (its first term) for 0.2 s, and lets it expire."""
    assert acquire(url, holder, 0.2)[:2] == (True, 1)
    time.sleep(0.3)


def test_the_first_asker_holds_it_renews_it_and_others_are_refused(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    held, term, holder, expires_in = acquire(url, "a", 10)
    assert (held, term, holder) == (True, 1, "a") and 9.5 < expires_in <= 10
    held, term, holder, expires_in = acquire(url, "b", 10)
    assert (held, term, holder) == (False, 1, "a") and 0 < expires_in <= 10
    assert acquire(url, "a", 10)[:3] == (True, 1, "a")  # a renewal keeps the term


def test_an_expired_lease_goes_to_the_next_asker_and_is_not_honoured_for_the_old_holder(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    expired(url, "a")
    assert acquire(url, "b", 10)[:3] == (True, 2, "b")
    held, term, holder, _ = acquire(url, "a", 10)  # a's renewal, too late
    assert (held, term, holder) == (False, 2, "b")


def test_a_holder_taking_its_expired_lease_again_starts_a_new_term(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    expired(url, "a")
    assert acquire(url, "a", 10)[:2] == (True, 2)
    assert acquire(url, "a", 10)[:2] == (True, 2)


def test_only_the_holder_releases_and_the_next_asker_takes_it_at_once(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    assert acquire(url, "a", 60)[0]
    assert not release(url, "b")
    assert acquire(url, "b", 60)[0] is False
    assert release(url, "a")
    assert not release(url, "a")  # nothing left to give up
    assert acquire(url, "b", 60)[:3] == (True, 2, "b")


@pytest.mark.parametrize("fresh_name", [True, False])
def test_concurrent_askers_for_a_free_lease_get_it_once(
    migrated_database_url: str, fresh_name: bool
) -> None:
    """Eight connections ask at the same instant, round after round, for a lease that is
    free (never taken, or just expired): exactly one gets it each round, one term each."""
    url = migrated_database_url
    askers, rounds = 8, 6
    connections = [psycopg.connect(url, autocommit=True) for _ in range(askers)]
    barrier = threading.Barrier(askers)
    answers: list[list[tuple[bool, int]]] = [[] for _ in range(rounds)]
    lock = threading.Lock()

    def ask(index: int) -> None:
        for round_ in range(rounds):
            name = f"race-{round_}" if fresh_name else "race"
            barrier.wait()
            row = (
                connections[index]
                .execute(
                    "SELECT held, term FROM acquire_lease(%s, %s, %s)",
                    [name, f"asker-{index}", timedelta(seconds=0.2)],
                )
                .fetchone()
            )
            assert row is not None
            with lock:
                answers[round_].append((bool(row[0]), int(row[1])))
            barrier.wait()
            if index == 0:
                time.sleep(0.3)  # the round's lease expires
            barrier.wait()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(askers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for conn in connections:
            conn.close()
    for round_, found in enumerate(answers):
        assert len(found) == askers
        assert [held for held, _ in found].count(True) == 1, found
        expected_term = 1 if fresh_name else round_ + 1
        assert {term for _, term in found} == {expected_term}, found


# ---- Leadership on the database ----


class Blackhole:
    """A TCP proxy in front of PostgreSQL that can stop passing bytes on (the connections stay
    open, every request hangs: a network partition, not a refusal)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dark = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.dark.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        """Close everything; shutdown first wakes the threads blocked on these sockets."""
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def blackhole_for(url: str) -> Iterator[tuple[Blackhole, str]]:
    parts = conninfo_to_dict(url)
    proxy = Blackhole(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    try:
        yield proxy, make_conninfo(url, host="127.0.0.1", port=proxy.port)
    finally:
        proxy.close()


@dataclass
class Led:
    """What one process's leader work did: its terms' starts and stops and its job runs, on
    the test's monotonic clock."""

    name: str
    starts: list[tuple[int | None, float]] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    async def work(self, leadership: Leadership) -> None:
        self.starts.append((leadership.term, time.monotonic()))
        try:
            while True:
                if leadership.leading():
                    self.runs.append(time.monotonic())
                await asyncio.sleep(0.02)
        finally:
            self.stops.append(time.monotonic())


async def wait_for(condition: object, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.02)


TIMINGS = LeaseTimings(1.5)  # renew every 0.5 s, stop 0.3 s before the lease would end


@pytest.mark.anyio
async def test_a_leader_cut_off_from_the_database_stops_before_a_standby_starts(
    migrated_database_url: str,
) -> None:
    """Its requests hang (a partition): it leads on until its own deadline, which passes
    before the lease ends in the database, so the standby only starts after it stopped."""
    url = migrated_database_url
    first, second = Led("first"), Led("second")
    before = asyncio.all_tasks()
    with blackhole_for(url) as (proxy, through_proxy):
        cut_off = Database(through_proxy, name="first", timeout_s=1.0)
        direct = Database(url, name="second", timeout_s=1.0)
        try:
            async with AsyncExitStack() as stack:
                lease = DatabaseLease(cut_off, "scheduler", "first", TIMINGS.ttl_s)
                a = await stack.enter_async_context(leading(first.work, lease, TIMINGS))
                await wait_for(lambda: first.starts)
                lease = DatabaseLease(direct, "scheduler", "second", TIMINGS.ttl_s)
                b = await stack.enter_async_context(leading(second.work, lease, TIMINGS))
                await asyncio.sleep(1.0)  # renewals: first keeps leading, second stands by
                assert not second.starts and first.runs and not first.stops

                proxy.dark.set()
                await wait_for(lambda: second.starts)
                (old_term, _), ((new_term, took_over),) = first.starts[0], second.starts
                assert new_term == (old_term or 0) + 1
                assert a.state.leading_until < took_over  # first's deadline came first
                assert first.stops and first.stops[0] < took_over  # and its work had stopped
                assert all(run < took_over for run in first.runs)

                proxy.dark.clear()  # first reaches the database again: it stands by
                await asyncio.sleep(1.0)
                assert len(first.starts) == 1 and not a.leading() and b.leading()
        finally:
            proxy.close()  # the requests still hanging on it fail now
            await cut_off.close()
            await direct.close()
            await settled(before)


async def settled(before: set[asyncio.Task[Any]], within_s: float = 15) -> None:
    """Until every task started since `before` has ended (requests given up on end in the
    background)."""
    deadline = time.monotonic() + within_s
    while asyncio.all_tasks() - before - {asyncio.current_task()}:
        assert time.monotonic() < deadline, asyncio.all_tasks() - before
        await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_a_leader_that_stops_cleanly_hands_over_at_the_standbys_next_turn(
    migrated_database_url: str,
) -> None:
    """With a 9 s lease renewed every 3 s, the leader's lease has at least 6 s left when it
    stops; the standby, asking every 3 s, has it within one turn because it was given up."""
    url = migrated_database_url
    timings = LeaseTimings(9)
    first, second = Led("first"), Led("second")
    databases = [Database(url, name=name) for name in ("first", "second")]
    try:
        async with AsyncExitStack() as leader_stack:
            lease = DatabaseLease(databases[0], "scheduler", "first", 9)
            await leader_stack.enter_async_context(leading(first.work, lease, timings))
            await wait_for(lambda: first.starts)
            lease = DatabaseLease(databases[1], "scheduler", "second", 9)
            async with leading(second.work, lease, timings) as standby:
                await wait_for(lambda: standby.state.next_attempt_at > time.monotonic())
                assert not standby.leading()
                await leader_stack.aclose()  # the leader stops cleanly
                stopped = time.monotonic()
                await wait_for(lambda: second.starts, within_s=10)
                took_over = second.starts[0][1]
                assert first.stops[0] <= stopped < took_over
                assert took_over - stopped < timings.retry_every_s + 1.0
                assert second.starts[0][0] == (first.starts[0][0] or 0) + 1
    finally:
        for database in databases:
            await database.close()

"""The primary's pool against a real PostgreSQL: a connection is checked before it is handed
out without a round trip while it has been quiet, and one the server ended is replaced."""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from edgemart.db import Connection, Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(module_database_url: str) -> AsyncIterator[Database]:
    database = Database(module_database_url, min_size=1, max_size=1)
    try:
        yield database
    finally:
        await database.close()


async def checked_out(database: Database) -> Connection:
    """A connection as the pool hands it out (the check has run), given back at once."""
    async with database.connection() as conn:
        return conn


async def test_a_quiet_connection_is_handed_out_without_a_round_trip(
    database: Database, tmp_path: Path
) -> None:
    conn = await checked_out(database)
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as sink:
        conn.pgconn.trace(sink.fileno())
        try:
            again = await checked_out(database)
        finally:
            conn.pgconn.untrace()
    assert again is conn
    assert trace.read_text() == ""  # nothing went to the server on the way out of the pool


async def test_a_connection_the_server_ended_is_replaced_before_use(
    database: Database, module_database_url: str
) -> None:
    conn = await checked_out(database)
    pid = conn.pgconn.backend_pid
    with psycopg.connect(module_database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    await wait_readable(conn.pgconn.socket)
    async with database.connection() as fresh:
        row = await (await fresh.execute("SELECT pg_backend_pid() AS pid")).fetchone()
    assert fresh is not conn and row is not None and row["pid"] != pid


async def wait_readable(fd: int, timeout_s: float = 5.0) -> None:
    """Until the server's goodbye has reached the client's socket."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    for _ in range(int(timeout_s / 0.01)):
        if poller.poll(0):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"nothing arrived on fd {fd} (pid {os.getpid()})")

"""edgemart through a real transaction pooler: PgBouncer in transaction mode (tests/pgbouncer.py)
with `DATABASE_POOLER=transaction`, its server pool smaller than the gateway's, so requests'
transactions take turns on server connections as behind RDS Proxy or Supavisor.

First, that the pooler really is one (session state one client leaves reaches the next), and
what edgemart's connections must therefore do: send no start-up options, prepare nothing on
the server, and take the statement timeout from the database's defaults. Then the purchase
and queued-purchase tests that race, retry and kill connections, run here unchanged: the
same test functions, their `client` and `services` fixtures rebuilt on the pooled URL (their
direct SQL checks still go straight to the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import DuplicatePreparedStatement, InvalidSqlStatementName, QueryCanceled

from edgemart.db import Database
from edgemart.services import Services
from tests.conftest import settings_for, throwaway_database
from tests.integration import test_purchase as purchases
from tests.integration import test_queued_purchases as queued
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.anyio
POOLED = {"database_pooler": "transaction"}
STATEMENT = "SELECT count(*) FROM products WHERE price_cents > %s"


def test_clients_take_turns_on_server_connections(
    pgbouncer: PgBouncer, module_database_url: str
) -> None:
    """The fixture is a transaction pooler: a `SET` and a session advisory lock one client
    leaves behind are found by the next client on that server connection (PgBouncer hands
    out the most recently released one). So a session lock never excludes another client,
    and the migration runner must not use one."""
    url = pgbouncer.url(module_database_url)
    with psycopg.connect(url, autocommit=True) as first:
        ((pid,),) = first.execute("SELECT pg_backend_pid()").fetchall()
        first.execute("SET work_mem = '1234kB'")
        first.execute("SELECT pg_advisory_lock(36)")
    with psycopg.connect(url, autocommit=True) as second:
        row = second.execute(
            "SELECT pg_backend_pid(), current_setting('work_mem'), pg_try_advisory_lock(36)"
        ).fetchone()
        second.execute("SELECT pg_advisory_unlock_all()")
        second.execute("RESET work_mem")
    assert row == (pid, "1234kB", True)


async def test_no_start_up_options_behind_a_transaction_pooler(
    pgbouncer: PgBouncer, module_database_url: str
) -> None:
    """PgBouncer refuses the statement-timeout option a direct connection sends; with
    `DATABASE_POOLER=transaction` none is sent and the pool connects."""
    url = pgbouncer.url(module_database_url)
    direct = Database(url, statement_timeout_ms=5000)
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        await AsyncConnection.connect(url, **direct.connection_kwargs())
    pooled = Database(url, statement_timeout_ms=5000, transaction_pooler=True)
    try:
        async with pooled.connection() as conn:
            row = await (await conn.execute("SELECT 1 AS one")).fetchone()
        assert row == {"one": 1}
    finally:
        await pooled.close()


async def test_statements_repeated_by_clients_taking_turns(
    pgbouncer: PgBouncer, module_database_url: str
) -> None:
    """Two clients alternate on one server connection, each repeating a statement past
    psycopg's prepare threshold (5): psycopg's defaults prepare it on the server under the
    same name for both, which fails; edgemart's pooled connections never prepare."""
    url = pgbouncer.url(module_database_url)

    async def alternate(first: AsyncConnection[Any], second: AsyncConnection[Any]) -> None:
        for index in range(8):
            for conn in (first, second):
                await conn.execute(STATEMENT, [index])

    a = await AsyncConnection.connect(url, autocommit=True)
    b = await AsyncConnection.connect(url, autocommit=True)
    try:
        with pytest.raises((DuplicatePreparedStatement, InvalidSqlStatementName)):
            await alternate(a, b)
    finally:
        await a.close()
        await b.close()
    database = Database(url, max_size=2, transaction_pooler=True)
    try:
        async with database.connection() as first, database.connection() as second:
            await alternate(first, second)
    finally:
        await database.close()


@pytest.fixture
def timed_database(postgres_admin_url: str) -> Iterator[str]:
    """A database of this test's own whose default statement timeout, for the suite's role,
    is 200 ms, as an operator sets it for edgemart's role behind a transaction pooler."""
    with throwaway_database(postgres_admin_url) as url:
        name, user = (conninfo_to_dict(url).get(k) for k in ("dbname", "user"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f'ALTER ROLE "{user or "postgres"}" IN DATABASE "{name}" '
                "SET statement_timeout = '200ms'".encode()
            )
        yield url


async def test_the_statement_timeout_comes_from_the_role_in_the_database(
    pgbouncer: PgBouncer, timed_database: str
) -> None:
    """Behind a transaction pooler `DB_STATEMENT_TIMEOUT_MS` cannot be sent (above): the
    role's default in the database applies to every server connection the pooler opens, and a
    statement past it is cancelled."""
    settings = settings_for(pgbouncer.url(timed_database), **POOLED, db_statement_timeout_ms=0)
    database = Database.primary_from(settings)
    try:
        async with database.connection() as conn:
            row = await (await conn.execute("SHOW statement_timeout")).fetchone()
        assert row == {"statement_timeout": "200ms"}
        with pytest.raises(QueryCanceled):
            async with database.connection() as conn:
                await conn.execute("SELECT pg_sleep(2)")
    finally:
        await database.close()


# --- The purchase tests, through the pooler. ---


@pytest.fixture(scope="module")
async def client(
    pgbouncer: PgBouncer, catalog_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """test_purchase's gateway, connected through PgBouncer."""
    async with purchases.gateway(pgbouncer.url(catalog_database_url), **POOLED) as http:
        yield http


fault_on = purchases.fault_on
test_order_placed_and_ledger = purchases.test_order_placed_and_ledger
test_replay_reuse_and_in_progress = purchases.test_replay_reuse_and_in_progress
test_200_buyers_race_for_50_units = purchases.test_200_buyers_race_for_50_units
test_50_requests_with_one_key_make_one_order = (
    purchases.test_50_requests_with_one_key_make_one_order
)
test_a_killed_connection_mid_purchase_is_retried_once = (
    purchases.test_a_killed_connection_mid_purchase_is_retried_once
)
test_buyers_of_one_product_queue_on_its_queue_lock = (
    purchases.test_buyers_of_one_product_queue_on_its_queue_lock
)
test_randomised_mixed_run_keeps_the_ledger_balanced = (
    purchases.test_randomised_mixed_run_keeps_the_ledger_balanced
)


# --- The queued purchases and functions/order_worker, through the pooler. ---


@pytest.fixture
async def services(
    pgbouncer: PgBouncer, catalog_database_url: str, queue_url: str
) -> AsyncIterator[Services]:
    """test_queued_purchases' services, connected through PgBouncer."""
    services = queued.queued_services(pgbouncer.url(catalog_database_url), queue_url, **POOLED)
    yield services
    await services.aclose()


queue_url = queued.queue_url
test_a_thousand_queued_purchases_of_three_hundred_units = (
    queued.test_a_thousand_queued_purchases_of_three_hundred_units
)
test_concurrent_workers_and_redeliveries_sell_each_unit_once = (
    queued.test_concurrent_workers_and_redeliveries_sell_each_unit_once
)

"""Chaos behind a transaction pooler: under the mixed load, through PgBouncer in transaction
mode (`DATABASE_POOLER=transaction`), every server connection of the database is killed with
`pg_terminate_backend` twice a second for 8 s. PgBouncer drops the clients whose transaction
was on a killed connection and opens new server connections; edgemart retries what it can.
Nothing answers 500 or an undocumented 5xx, purchases keep completing, every 201 is an order,
no key buys twice, the ledger balances, and once the kills stop every purchase key sent, sent
again, is answered as decided (replayed) or decided now. Loopback only; about 20 s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from edgemart.services import Services
from gateway.app import create_gateway
from gateway.democatalog import seed_catalog
from tests.chaos.load import DOCUMENTED_503_CODES, ChaosCatalog, MixedLoad, reported_ledger_problems
from tests.chaos.test_connection_kills_and_redis_kill import KILL_FOR_S, kill_connections
from tests.chaos.test_database_outage_under_load import SECRET, chaos_settings
from tests.conftest import DEMO_AS_OF
from tests.pgbouncer import PgBouncer

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]
RECOVER_S = 4.0


@pytest.fixture
def chaos_database(migrated_database_url: str) -> Iterator[str]:
    """A database of this test's own on the suite's server, with the chaos catalog: the kills
    reach only its backends. Stock and wallets are deep enough that purchases still complete
    once the kills stop (the load sells some 300 units a phase)."""
    url = migrated_database_url
    seed_catalog(url, products=300, stores=5, seed=4, as_of=DEMO_AS_OF, buyers=20)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE products SET stock = stock + 1000 WHERE is_available")
        conn.execute("UPDATE wallets SET balance_cents = balance_cents + 100000000")
    yield url


class PurchaseLog:
    """The last response to each purchase key sent through the client (a retried key keeps its
    last answer), with the request that got it."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[httpx.Request, httpx.Response]] = {}

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        if request.method == "POST" and request.url.path == "/purchases":
            await response.aread()
            self.last[request.headers["idempotency-key"]] = (request, response)

    def orders(self) -> dict[str, str]:
        """Order id by key, for the keys last answered 201."""
        return {
            key: response.json()["id"]
            for key, (_, response) in self.last.items()
            if response.status_code == 201
        }


async def send_each_key_again(
    client: httpx.AsyncClient, log: PurchaseLog
) -> dict[str, httpx.Response]:
    """Every key once more, as a client whose request failed would retry it."""
    again: dict[str, httpx.Response] = {}
    for key, (request, _) in list(log.last.items()):
        headers = {
            name: request.headers[name]
            for name in ("authorization", "idempotency-key", "content-type")
        }
        again[key] = await client.post("/purchases", content=request.content, headers=headers)
    return again


def completed_orders(url: str, ids: list[str]) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM orders WHERE id = ANY(%s::uuid[]) AND status = 'completed'",
            [ids],
        ).fetchall()
    return {row[0] for row in rows}


async def test_server_connection_kills_behind_pgbouncer(
    pgbouncer: PgBouncer, chaos_database: str
) -> None:
    url = chaos_database
    catalog = ChaosCatalog.read(url)
    services = Services.from_settings(
        chaos_settings(
            pgbouncer.url(url), database_pooler="transaction", circuit_failure_threshold=5
        )
    )
    log = PurchaseLog()
    transport = httpx.ASGITransport(app=create_gateway(services))
    load = MixedLoad(catalog, SECRET, retry_purchases=True)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", event_hooks={"response": [log]}
        ) as client:
            workers = await load.run(client)
            await asyncio.sleep(2)
            load.phase = "connection kills"
            killed = await kill_connections(url, KILL_FOR_S)
            load.phase = "after"
            await asyncio.sleep(RECOVER_S)
            await load.stop(workers)
            answered = log.orders()
            again = await send_each_key_again(client, log)
    finally:
        await services.aclose()
    problems = reported_ledger_problems(
        url, catalog, load, backends_killed=killed, keys=len(log.last)
    )
    assert killed > 0
    assert load.undocumented_5xx() == []
    assert [o for counts in load.outcomes.values() for o in counts if o[1] == 500] == []
    # Bounded errors: the kills cost at most 5% of the requests a 503; purchases complete
    # during the kills and after them.
    unavailable = sum(load.with_code("connection kills", c) for c in DOCUMENTED_503_CODES)
    assert unavailable <= 0.05 * load.total("connection kills")
    assert load.total("connection kills", kind="purchase", status=201) > 0
    assert load.total("after", kind="purchase", status=201) > 0
    # Every 201 is a completed order; sent again, each key is answered as decided (a 201 by
    # the same order, replayed) or, if its last answer was a 503, decided now.
    assert completed_orders(url, list(answered.values())) == set(answered.values())
    assert {r.status_code for r in again.values()} <= {201, 402, 409}
    for key, order_id in answered.items():
        assert again[key].json()["id"] == order_id
        assert again[key].headers["idempotent-replayed"] == "true"
    assert problems == []  # no key bought twice; the ledger balances

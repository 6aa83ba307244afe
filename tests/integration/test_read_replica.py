"""Public reads against a real streaming replica (tests/support/replica.py): served by it
while it keeps up, by the primary when it lags, is down, or a write is recent; never a 5xx;
purchases and other strict reads on the primary whatever the replica says."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from edgemart import metrics
from edgemart.readrouting import DOWN, LAGGING, REPLICA
from edgemart.services import Services
from gateway.app import create_gateway
from gateway.democatalog import seed_catalog
from tests.conftest import DEMO_AS_OF, LogCapture, settings_for
from tests.support.replica import ReplicatedPostgres, replicated_postgres, replication

__all__ = ["replicated_postgres", "replication"]  # the fixtures, used by name below

pytestmark = pytest.mark.anyio
SECRET = "replica-tests-secret-of-at-least-32-bytes"
GROUPS = ("home", "search", "store", "listings", "purchases")
LAGGING_MESSAGE = "read replica replica -> lagging: public reads go to the primary"
DOWN_MESSAGE = "read replica replica -> down: public reads go to the primary"


def auth(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def on_primary(pair: ReplicatedPostgres, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pair.primary_url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode(), args or None)
        return cursor.fetchall() if cursor.description else []


def on_replica(pair: ReplicatedPostgres, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pair.replica_url, autocommit=True) as conn:
        return conn.execute(statement.encode(), args or None).fetchall()


@pytest.fixture(scope="module")
def catalog(replicated_postgres: ReplicatedPostgres) -> ReplicatedPostgres:
    """The session's pair with a small demo catalog (buyers funded), replicated."""
    seed_catalog(
        replicated_postgres.primary_url,
        products=120,
        stores=4,
        seed=5,
        as_of=DEMO_AS_OF,
        buyers=5,
        replace=True,
    )
    replicated_postgres.wait_caught_up()
    return replicated_postgres


@pytest.fixture
def pair(catalog: ReplicatedPostgres, replication: ReplicatedPostgres) -> ReplicatedPostgres:
    return replication


@asynccontextmanager
async def gateway(
    pair: ReplicatedPostgres, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    values: dict[str, Any] = {
        "database_replica_url": pair.replica_url,
        "jwt_secret": SECRET,
        "cursor_secret": "replica-tests-cursor-secret",
        "rate_limit_overrides": tuple((group, 0, 60) for group in GROUPS),
        "db_pool_timeout_s": 1.0,
        "circuit_failure_threshold": 3,
        "circuit_success_threshold": 1,
        "circuit_open_timeout_s": 0.5,
        "replica_max_lag_s": 1.0,
        "replica_check_interval_s": 0.1,
        "read_your_writes_s": 1.0,
        **overrides,
    }
    services = Services.from_settings(settings_for(pair.primary_url, **values))
    transport = httpx.ASGITransport(app=create_gateway(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            yield http, services
    finally:
        await services.aclose()


async def admitted(services: Services) -> None:
    """Measure until the replica is taken (a fresh process reads the primary until then)."""
    deadline = time.monotonic() + 10
    while services.reads.policy is not None and services.reads.policy.state != REPLICA:
        assert time.monotonic() < deadline, services.reads.policy.state
        await services.reads.check()
        await asyncio.sleep(0.05)


def a_product(pair: ReplicatedPostgres) -> str:
    rows = on_primary(
        pair,
        "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active ORDER BY p.id LIMIT 1",
    )
    return str(rows[0][0])


async def product_page(client: httpx.AsyncClient, services: Services, product: str) -> Any:
    """The product page as a database load makes it now (this process's copy dropped)."""
    services.cache.invalidate(f"product:{product}")
    response = await client.get(f"/products/{product}")
    assert response.status_code == 200, response.text
    return response.json()


def routed(route: str) -> float:
    return metrics.count(metrics.READ_ROUTES, route=route)


def transitions(entered: str) -> float:
    return metrics.count(metrics.REPLICA_TRANSITIONS, entered=entered)


def rename(pair: ReplicatedPostgres, product: str) -> str:
    """A new name for the product, written on the primary behind the app's back (no
    invalidation, no write window: only the replica's replay decides what a read sees)."""
    name = f"renamed {uuid.uuid4().hex[:8]}"
    on_primary(pair, "UPDATE products SET name = %s WHERE id = %s", name, product)
    return name


async def test_public_reads_are_served_by_the_replica(pair: ReplicatedPostgres) -> None:
    product = a_product(pair)
    # A threshold the test never reaches: only replay and the write window decide.
    async with gateway(pair, replica_max_lag_s=60.0, read_your_writes_s=1.0) as (client, services):
        await admitted(services)
        before = (await product_page(client, services, product))["name"]
        pair.pause_replay()
        name = rename(pair, product)
        from_replica = routed(REPLICA)
        # The replica has not replayed the rename: a public read does not see it.
        assert (await product_page(client, services, product))["name"] == before
        assert routed(REPLICA) == from_replica + 1
        # A write (here or told of) sends reads to the primary for the window.
        services.reads.wrote()
        after_write = routed("after_write")
        assert (await product_page(client, services, product))["name"] == name
        assert routed("after_write") == after_write + 1
        await asyncio.sleep(1.05)  # the window is over; the replica still has not replayed
        assert (await product_page(client, services, product))["name"] == before
        pair.resume_replay()
        pair.wait_caught_up()
        assert (await product_page(client, services, product))["name"] == name


def store_of(pair: ReplicatedPostgres) -> str:
    return str(on_primary(pair, "SELECT slug FROM stores ORDER BY slug LIMIT 1")[0][0])


async def test_every_public_read_site_reads_the_replica(pair: ReplicatedPostgres) -> None:
    """Home, search, popular searches, a store page, a product page: each a replica load."""
    word = on_primary(pair, "SELECT split_part(name, ' ', 1) FROM products ORDER BY id LIMIT 1")
    paths = [
        "/marketplace/home",
        f"/marketplace/search?q={word[0][0]}&sort=newest",
        "/marketplace/search/popular",
        f"/stores/{store_of(pair)}",
        f"/products/{a_product(pair)}",
    ]
    async with gateway(pair, replica_max_lag_s=60.0) as (client, services):
        await admitted(services)
        before = {route: routed(route) for route in ("replica", "unchecked", "lagging")}
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
        assert routed(REPLICA) == before[REPLICA] + len(paths)
        assert routed("unchecked") == before["unchecked"]


async def test_a_lagging_replica_is_skipped_with_fresh_data_and_no_5xx(
    pair: ReplicatedPostgres, captured_logs: LogCapture
) -> None:
    product = a_product(pair)
    async with gateway(pair) as (client, services):
        policy = services.reads.policy
        assert policy is not None
        await admitted(services)
        lagging_before = transitions(LAGGING)
        pair.pause_replay()
        name = rename(pair, product)
        # Reads keep coming; the background checks find the replica falling behind.
        deadline = time.monotonic() + 15
        while policy.state != LAGGING:
            assert time.monotonic() < deadline, "the lagging replica was never skipped"
            await product_page(client, services, product)  # a 5xx fails inside
            await asyncio.sleep(0.05)
        primary_reads = routed(LAGGING)
        for _ in range(3):
            assert (await product_page(client, services, product))["name"] == name
        assert routed(LAGGING) == primary_reads + 3
        # The replica itself still has the old name: the fresh page came from the primary.
        assert on_replica(pair, "SELECT name FROM products WHERE id = %s", product)[0][0] != name
        assert transitions(LAGGING) == lagging_before + 1
        assert len(captured_logs.lines(LAGGING_MESSAGE)) == 1  # logged once, not per read
        # It catches up and is taken back.
        pair.resume_replay()
        deadline = time.monotonic() + 15
        while policy.state != REPLICA:
            assert time.monotonic() < deadline, "the replica was never taken back"
            assert (await product_page(client, services, product))["name"] == name
            await asyncio.sleep(0.05)
        from_replica = routed(REPLICA)
        assert (await product_page(client, services, product))["name"] == name
        assert routed(REPLICA) == from_replica + 1
        assert len(captured_logs.lines("read replica lagging -> replica: public reads use it")) == 1


async def test_a_killed_replica_costs_no_5xx_and_is_taken_back_when_it_returns(
    pair: ReplicatedPostgres, captured_logs: LogCapture
) -> None:
    product = a_product(pair)
    pages = ["/marketplace/home", f"/stores/{store_of(pair)}", "/marketplace/search/popular"]
    async with gateway(pair) as (client, services):
        policy = services.reads.policy
        assert policy is not None
        await admitted(services)
        await product_page(client, services, product)  # the pool holds replica connections
        pair.kill_replica()
        name = rename(pair, product)
        # The next loads find the replica gone: each is served by the primary, none fails.
        statuses = []
        for _ in range(3):
            assert (await product_page(client, services, product))["name"] == name
            for path in pages:
                services.cache.invalidate(prefixes=("",))
                statuses.append((await client.get(path)).status_code)
        assert set(statuses) == {200}
        assert policy.state == DOWN
        assert len(captured_logs.lines(DOWN_MESSAGE)) == 1
        pair.start_replica()
        pair.wait_caught_up()
        deadline = time.monotonic() + 20
        while policy.state != REPLICA:
            assert time.monotonic() < deadline, f"not taken back: {policy.state}"
            assert (await product_page(client, services, product))["name"] == name
            await asyncio.sleep(0.1)
        from_replica = routed(REPLICA)
        assert (await product_page(client, services, product))["name"] == name
        assert routed(REPLICA) == from_replica + 1


@pytest.fixture
def listing(pair: ReplicatedPostgres) -> Iterator[tuple[str, str]]:
    """An unstocked product of the first store, replicated; and the store's owner."""
    rows = on_primary(
        pair,
        "INSERT INTO products (store_id, category_id, name, price_cents, stock) "
        "SELECT id, 1, 'Replica test item', 500, 0 FROM stores ORDER BY slug LIMIT 1 "
        "RETURNING id::text, (SELECT owner_sub FROM stores ORDER BY slug LIMIT 1)",
    )
    pair.wait_caught_up()
    yield str(rows[0][0]), str(rows[0][1])


async def test_a_purchase_right_after_a_listing_change_sees_the_primary_stock(
    pair: ReplicatedPostgres, listing: tuple[str, str]
) -> None:
    product, owner = listing
    async with gateway(pair, replica_max_lag_s=60.0) as (client, services):
        await admitted(services)
        pair.pause_replay()  # the replica keeps the listing out of stock
        patched = await client.patch(f"/products/{product}", json={"stock": 5}, headers=auth(owner))
        assert patched.status_code == 200, patched.text
        bought = await client.post(
            "/purchases",
            json={"product_id": product, "quantity": 2},
            headers={**auth("buyer-1"), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert bought.status_code == 201, bought.text
        order = bought.json()["id"]
        # The buyer's own order and wallet are strict reads: the primary's.
        assert (await client.get(f"/purchases/{order}", headers=auth("buyer-1"))).status_code == 200
        # The replica has neither the stock nor the order.
        assert on_replica(pair, "SELECT stock FROM products WHERE id = %s", product) == [(0,)]
        assert on_replica(pair, "SELECT 1 FROM orders WHERE id = %s", order) == []
        # The public page after the write (its invalidation calls wrote()): the primary's stock.
        services.reads.wrote()
        page = await product_page(client, services, product)
        assert page["stock_available"] == 3

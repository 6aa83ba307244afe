"""The fleet cache across processes: two `Services` with their own gateway apps on one
database and one Redis, as two processes of the fleet are (and, at the end, two real
`edgemart serve` processes). A write in one is served by the other within a second, with or
without a subscription; a cold process is served from Redis without the database; a cold page
asked of both at once is rendered once; Redis killed and restarted costs no 5xx."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.types import ASGIApp

from edgemart import metrics
from edgemart.db import Database
from edgemart.readrouting import ReadRouting
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.app import create_gateway
from tests.conftest import LogCapture, RedisProcess, settings_for
from tests.integration.test_fresh_after_writes import listed
from tests.integration.test_single_flight import CountingDatabase
from tests.support.polling import until
from tests.support.purchases import fund
from tests.support.serve import answering_serve, shared_cache_environment
from tests.support.tokens import SECRET, auth, headers

pytestmark = pytest.mark.anyio
OWNER = "fresh-owner"  # the owner `listed` creates stores for
BOUND_S = 1.0
"""After a write commits, every process serves the new data within this."""


def fleet_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    return settings_for(
        database_url,
        redis_url=redis_url,
        jwt_secret=SECRET,
        cursor_secret="s",
        rate_limit_backend="memory",
        # Redis's answers, not its timeout, are under test: time enough under load (a first
        # call connects and loads its script). A killed Redis refuses at once anyway.
        shared_cache_timeout_ms=2000.0,
        access_log_sample_rate=1.0,
        rate_limit_overrides=tuple(
            (group, 0, 60) for group in ("home", "search", "store", "listings", "purchases")
        ),
        **overrides,
    )


@dataclass
class Process:
    client: httpx.AsyncClient
    services: Services

    async def product(self, product_id: str) -> Any:
        response = await self.client.get(f"/products/{product_id}")
        return response.json() if response.status_code == 200 else response.status_code

    async def store(self, slug: str) -> dict[str, Any]:
        response = await self.client.get(f"/stores/{slug}")
        assert response.status_code == 200, response.text
        return {p["id"]: p for p in response.json()["products"]}

    async def search(self, word: str) -> dict[str, Any]:
        response = await self.client.get("/marketplace/search", params={"q": word})
        assert response.status_code == 200, response.text
        return {p["id"]: p for p in response.json()["results"]}


async def buy(client: httpx.AsyncClient, product: str, buyer: str) -> httpx.Response:
    return await client.post(
        "/purchases", json={"product_id": product, "quantity": 1}, headers=headers(buyer)
    )


async def subscribed(services: Services) -> bool:
    assert services.broadcast is not None
    return services.broadcast.subscription.live_since is not None


@asynccontextmanager
async def process(
    settings: Settings,
    *,
    listening: bool = True,
    database: Database | None = None,
    app_of: Callable[[Services], ASGIApp] = create_gateway,
) -> AsyncIterator[Process]:
    """One process of the fleet: its own Services and gateway app (`app_of` them).
    `listening` runs the subscriber as the gateway's lifespan does; without it, the process
    is like a Lambda environment. `database` replaces its pools (to count what it asks)."""
    services = Services.from_settings(settings)
    if database is not None:
        services.primary = services.replica = database
        services.reads = ReadRouting(database)
    transport = httpx.ASGITransport(app=app_of(services), client=("203.0.113.70", 1))
    try:
        async with AsyncExitStack() as stack:
            if listening:
                await stack.enter_async_context(services.listening())
                await until(lambda: subscribed(services))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30)
            )
            yield Process(client, services)
    finally:
        await services.aclose()


@pytest.fixture
async def fleet(
    catalog_database_url: str, redis_url: str
) -> AsyncIterator[tuple[Process, Process]]:
    settings = fleet_settings(catalog_database_url, redis_url)
    async with process(settings) as first, process(settings) as second:
        yield first, second


async def test_purchases_in_one_process_are_served_by_the_other_within_a_second(
    fleet: tuple[Process, Process], catalog_database_url: str
) -> None:
    writer, reader = fleet
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, slug = await listed(writer.client, word, stock=3)
    fund(catalog_database_url, "fleet-buyer", 100_000)
    seen = []
    for bought in (1, 2, 3):
        # Every page showing the product is in the reader's cache (and Redis) before the write.
        assert (await reader.product(product))["sold_count"] == bought - 1
        assert (await reader.store(slug))[product]["in_stock"] is True
        assert (await reader.search(word))[product]["sold_count"] == bought - 1
        response = await buy(writer.client, product, "fleet-buyer")
        assert response.status_code == 201, response.text

        async def fresh(bought: int = bought) -> bool:
            detail = await reader.product(product)
            listing = (await reader.search(word))[product]
            in_stock = (await reader.store(slug))[product]["in_stock"]
            return (detail["sold_count"], listing["sold_count"], in_stock) == (
                bought,
                bought,
                bought < 3,
            )

        seen.append(await until(fresh))
    print(f"purchase seen by the other process after (s): {[round(s, 3) for s in seen]}")
    assert max(seen) < BOUND_S


async def test_listing_edits_in_one_process_are_served_by_the_other_within_a_second(
    fleet: tuple[Process, Process],
) -> None:
    writer, reader = fleet
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, slug = await listed(writer.client, word, stock=5)
    seen = []
    for price in (700, 900):
        assert (await reader.search(word))[product]["price_cents"] != price  # cached
        assert (await reader.store(slug))[product]["price_cents"] != price
        patched = await writer.client.patch(
            f"/products/{product}", json={"price_cents": price}, headers=auth(OWNER)
        )
        assert patched.status_code == 200, patched.text

        async def repriced(price: int = price) -> bool:
            pages = [
                await reader.product(product),
                (await reader.search(word))[product],
                (await reader.store(slug))[product],
            ]
            return all(p["price_cents"] == price for p in pages)

        seen.append(await until(repriced))
    # Unlisted: the search page (dropped by prefix) and the store page no longer show it.
    await reader.search(word)
    patched = await writer.client.patch(
        f"/products/{product}", json={"is_available": False}, headers=auth(OWNER)
    )
    assert patched.status_code == 200, patched.text

    async def gone() -> bool:
        return (
            await reader.product(product) == 404
            and await reader.search(word) == {}
            and await reader.store(slug) == {}
        )

    seen.append(await until(gone))
    print(f"listing edit seen by the other process after (s): {[round(s, 3) for s in seen]}")
    assert max(seen) < BOUND_S


async def test_a_process_without_a_subscription_serves_a_write_within_a_second(
    catalog_database_url: str, redis_url: str
) -> None:
    """A Lambda environment does not subscribe: it trusts its own copy for under a second,
    then reads the page again from Redis, which the writer emptied."""
    settings = fleet_settings(catalog_database_url, redis_url)
    async with process(settings) as writer, process(settings, listening=False) as reader:
        word = f"zq{uuid.uuid4().hex[:6]}"
        product, _ = await listed(writer.client, word, stock=5)
        seen = []
        for price in (300, 400, 500):
            assert (await reader.product(product))["price_cents"] != price
            patched = await writer.client.patch(
                f"/products/{product}", json={"price_cents": price}, headers=auth(OWNER)
            )
            assert patched.status_code == 200, patched.text

            async def repriced(price: int = price) -> bool:
                return bool((await reader.product(product))["price_cents"] == price)

            seen.append(await until(repriced))
    print(f"write seen without a subscription after (s): {[round(s, 3) for s in seen]}")
    assert max(seen) < BOUND_S


def database_with_checkouts(url: str) -> CountingDatabase:
    """The real pool, counting each connection checked out (each holding its query 50 ms)."""
    database = CountingDatabase(url)
    database.checkouts = 0
    return database


async def test_a_cold_process_is_served_from_redis_without_the_database(
    catalog_database_url: str, redis_url: str, captured_logs: LogCapture
) -> None:
    settings = fleet_settings(catalog_database_url, redis_url)
    word = f"zq{uuid.uuid4().hex[:6]}"
    async with process(settings) as warm:
        product, slug = await listed(warm.client, word, stock=2)
        paths = [f"/products/{product}", f"/stores/{slug}", f"/marketplace/search?q={word}"]
        rendered = [await warm.client.get(path) for path in paths]
    counting = database_with_checkouts(catalog_database_url)
    captured_logs.formatted.clear()
    async with process(settings, listening=False, database=counting) as cold:
        served = [await cold.client.get(path) for path in paths]
        again = [await cold.client.get(path) for path in paths]
    assert counting.checkouts == 0  # not one query: every page came from Redis, then memory
    for first, second in zip(rendered, served, strict=True):
        assert second.status_code == 200
        assert (second.content, second.headers["etag"]) == (first.content, first.headers["etag"])
        assert second.headers["x-edgemart-tags"] == first.headers["x-edgemart-tags"]
    assert all(response.status_code == 200 for response in again)
    assert f"product:{product}" in served[0].headers["x-edgemart-tags"].split()
    assert f"store:{slug}" in served[1].headers["x-edgemart-tags"].split()
    lines = [line["cache"] for line in captured_logs.lines("request")]
    assert lines == ["l2"] * 3 + ["hit"] * 3


async def test_a_cold_page_asked_of_two_processes_at_once_is_rendered_once(
    catalog_database_url: str, redis_url: str
) -> None:
    settings = fleet_settings(catalog_database_url, redis_url)
    first_db = database_with_checkouts(catalog_database_url)
    second_db = database_with_checkouts(catalog_database_url)
    word = f"zq{uuid.uuid4().hex[:6]}"  # a search nobody asked for yet: a cold key
    path = f"/marketplace/search?q={word}&sort=price_asc"
    waited = metrics.count(metrics.CACHE_FILLS, cache_rule="search", outcome="waited")
    async with (
        process(settings, database=first_db) as first,
        process(settings, database=second_db) as second,
    ):
        responses = await asyncio.gather(
            *(p.client.get(path) for _ in range(20) for p in (first, second))
        )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert first_db.checkouts + second_db.checkouts == 1  # one render for the fleet
    assert metrics.count(metrics.CACHE_FILLS, cache_rule="search", outcome="waited") == waited + 1


def commands_run(admin: redis.Redis) -> dict[str, int]:
    """Calls of each command the Redis server ran so far (`INFO commandstats`)."""
    stats = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_a_hit_in_this_process_s_cache_does_not_touch_redis(
    catalog_database_url: str, own_redis: RedisProcess
) -> None:
    settings = fleet_settings(catalog_database_url, own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    async with process(settings) as gateway:
        assert (await gateway.client.get("/marketplace/home")).status_code == 200  # filled
        before = commands_run(admin)
        for _ in range(50):
            assert (await gateway.client.get("/marketplace/home")).status_code == 200
        after = commands_run(admin)
    admin.close()
    ran = {name: calls - before.get(name, 0) for name, calls in after.items()}
    # Only the subscription's pings ran meanwhile (and the INFO that counted).
    assert {name for name, calls in ran.items() if calls} <= {"ping", "info"}


async def test_redis_killed_costs_no_5xx_and_everything_resumes_when_it_returns(
    catalog_database_url: str, own_redis: RedisProcess
) -> None:
    settings = fleet_settings(catalog_database_url, own_redis.url)
    errors_before = metrics.count(metrics.SHARED_CACHE_ERRORS)
    unavailable_before = metrics.count(metrics.CACHE_LOOKUPS, layer="l2", result="unavailable")
    async with process(settings) as writer, process(settings) as reader:
        word = f"zq{uuid.uuid4().hex[:6]}"
        product, slug = await listed(writer.client, word, stock=10)
        fund(catalog_database_url, "outage-buyer", 100_000)
        for p in (writer, reader):
            assert (await p.product(product))["sold_count"] == 0

        own_redis.kill()
        statuses = []
        for _ in range(20):  # over two seconds: the subscriptions notice, lookups fail
            for p in (writer, reader):
                for path in (f"/products/{product}", f"/stores/{slug}", "/marketplace/home"):
                    statuses.append((await p.client.get(path)).status_code)
            await asyncio.sleep(0.1)
        bought = await buy(writer.client, product, "outage-buyer")
        assert bought.status_code == 201, bought.text  # the write never fails for a cache
        assert (await writer.product(product))["sold_count"] == 1  # its own cache dropped it
        statuses.append((await reader.client.get(f"/products/{product}")).status_code)
        assert set(statuses) == {200}
        assert not await subscribed(writer.services) and not await subscribed(reader.services)
        assert metrics.count(metrics.SHARED_CACHE_ERRORS) > errors_before
        unavailable = metrics.count(metrics.CACHE_LOOKUPS, layer="l2", result="unavailable")
        assert unavailable > unavailable_before

        own_redis.start()  # empty: the restart lost every entry
        await until(lambda: subscribed(writer.services))
        await until(lambda: subscribed(reader.services))

        async def sold(count: int) -> bool:
            return bool((await reader.product(product))["sold_count"] == count)

        # The write made while Redis was away: the reader's copy predates its new
        # subscription, so it is read again once the window has passed.
        # (Its shared cache may first sit out the second of back-off its last failure began.)
        await until(lambda: sold(1), limit_s=3.0)
        bought = await buy(writer.client, product, "outage-buyer")
        assert bought.status_code == 201, bought.text
        assert await until(lambda: sold(2)) < BOUND_S
    # The shared cache works again: a cold process is served without the database.
    counting = database_with_checkouts(catalog_database_url)
    async with process(settings, listening=False, database=counting) as cold:
        assert (await cold.product(product))["sold_count"] == 2
    assert counting.checkouts == 0


# ---- Two real `edgemart serve` processes ----


@contextmanager
def gateway_serve(database_url: str, redis_url: str, namespace: str, log: Path) -> Iterator[str]:
    """A real `edgemart serve` on the test database and Redis; yields its URL."""
    env = {
        **shared_cache_environment(database_url, redis_url, namespace, SECRET),
        "CURSOR_SECRET": "s",
        **{f"RATE_LIMIT_{group}": "off" for group in ("SEARCH", "STORE", "LISTINGS", "PURCHASES")},
    }
    with answering_serve(env, log, log.parent, deadline_s=90) as serve:
        yield serve.url


async def test_two_gateway_processes_serve_each_other_s_writes_within_a_second(
    catalog_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    namespace = f"edgemart-test:{uuid.uuid4().hex}"
    with (
        gateway_serve(catalog_database_url, redis_url, namespace, tmp_path / "1.log") as one,
        gateway_serve(catalog_database_url, redis_url, namespace, tmp_path / "2.log") as two,
    ):
        async with (
            httpx.AsyncClient(base_url=one, timeout=30) as writer,
            httpx.AsyncClient(base_url=two, timeout=30) as reader,
        ):
            word = f"zq{uuid.uuid4().hex[:6]}"
            product, _ = await listed(writer, word, stock=5)
            fund(catalog_database_url, "two-process-buyer", 100_000)

            async def reader_shows(field: str, value: object) -> bool:
                detail = (await reader.get(f"/products/{product}")).json()
                found = (await reader.get("/marketplace/search", params={"q": word})).json()
                return bool(detail[field] == value and found["results"][0][field] == value)

            seen = []
            for bought in (1, 2):
                assert await reader_shows("sold_count", bought - 1)  # cached in the reader
                response = await buy(writer, product, "two-process-buyer")
                assert response.status_code == 201, response.text
                seen.append(await until(lambda bought=bought: reader_shows("sold_count", bought)))
            assert await reader_shows("price_cents", 500)
            patched = await writer.patch(
                f"/products/{product}", json={"price_cents": 650}, headers=auth(OWNER)
            )
            assert patched.status_code == 200, patched.text
            seen.append(await until(lambda: reader_shows("price_cents", 650)))
    print(f"writes seen by the other gateway process after (s): {[round(s, 3) for s in seen]}")
    assert max(seen) < BOUND_S

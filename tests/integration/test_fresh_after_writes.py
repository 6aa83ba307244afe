"""After a write, the process that made it serves the new data at once: every cached page
showing what the write changed is dropped (edgemart.changes), whatever its TTL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgemart.services import Services
from functions.order_worker.app import order_worker
from tests.conftest import open_gateway, settings_for
from tests.support.purchases import fund
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers

pytestmark = pytest.mark.anyio
OWNER = "fresh-owner"


@pytest.fixture(scope="module")
async def gateway(
    catalog_database_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    settings = settings_for(
        catalog_database_url,
        jwt_secret=SECRET,
        cursor_secret="s",
        rate_limit_overrides=tuple(
            (group, 0, 60) for group in ("search", "store", "listings", "purchases")
        ),
    )
    services = Services.from_settings(settings)
    async with open_gateway(services, peer=("203.0.113.60", 1), base_url="http://t") as client:
        yield client, services


async def listed(client: httpx.AsyncClient, word: str, stock: int) -> tuple[str, str]:
    """A new listing named by a word of its own, in a store of its own: (product id, slug)."""
    slug = f"fresh-{uuid.uuid4().hex[:8]}"
    store = await client.post("/stores", json={"slug": slug, "name": "Fresh"}, headers=auth(OWNER))
    assert store.status_code == 201, store.text
    product = await client.post(
        "/products",
        json={
            "store_slug": slug,
            "category_id": 1,
            "name": f"{word} lamp",
            "price_cents": 500,
            "stock": stock,
        },
        headers=auth(OWNER),
    )
    assert product.status_code == 201, product.text
    return product.json()["id"], slug


async def pages(client: httpx.AsyncClient, product: str, slug: str, word: str) -> dict[str, Any]:
    """What the product page, its store's page and a search for its word show now."""
    detail = await client.get(f"/products/{product}")
    store = await client.get(f"/stores/{slug}")
    search = await client.get("/marketplace/search", params={"q": word})
    return {
        "detail": detail.json() if detail.status_code == 200 else detail.status_code,
        "store": {p["id"]: p["in_stock"] for p in store.json()["products"]},
        "search": {p["id"]: (p["in_stock"], p["sold_count"]) for p in search.json()["results"]},
    }


async def test_a_purchase_is_seen_at_once_on_every_page_showing_the_product(
    gateway: tuple[httpx.AsyncClient, Services], catalog_database_url: str
) -> None:
    client, _ = gateway
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, slug = await listed(client, word, stock=3)
    before = await pages(client, product, slug, word)  # every page cached now
    assert before["detail"]["stock_available"] == 3 and before["store"] == {product: True}
    assert before["search"] == {product: (True, 0)}
    fund(catalog_database_url, "fresh-buyer", 100_000)
    bought = await client.post(
        "/purchases", json={"product_id": product, "quantity": 3}, headers=headers("fresh-buyer")
    )
    assert bought.status_code == 201, bought.text
    after = await pages(client, product, slug, word)
    assert after["detail"]["stock_available"] == 0 and after["detail"]["in_stock"] is False
    assert after["store"] == {product: False}
    assert after["search"] == {product: (False, 3)}


async def test_an_unlisted_product_leaves_search_and_its_page_at_once(
    gateway: tuple[httpx.AsyncClient, Services],
) -> None:
    client, _ = gateway
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, slug = await listed(client, word, stock=5)
    assert (await pages(client, product, slug, word))["search"] == {product: (True, 0)}
    patched = await client.patch(
        f"/products/{product}", json={"is_available": False}, headers=auth(OWNER)
    )
    assert patched.status_code == 200, patched.text
    after = await pages(client, product, slug, word)
    assert after == {"detail": 404, "store": {}, "search": {}}


async def test_a_new_listing_appears_in_searches_cached_before_it(
    gateway: tuple[httpx.AsyncClient, Services],
) -> None:
    client, _ = gateway
    word = f"zq{uuid.uuid4().hex[:6]}"
    empty = await client.get("/marketplace/search", params={"q": word})
    assert empty.json()["results"] == []  # cached: nothing matches yet
    product, slug = await listed(client, word, stock=1)
    found = await client.get("/marketplace/search", params={"q": word})
    assert [p["id"] for p in found.json()["results"]] == [product]
    store = await client.get(f"/stores/{slug}")
    assert [p["id"] for p in store.json()["products"]] == [product]


async def test_created_listings_say_where_they_live(
    gateway: tuple[httpx.AsyncClient, Services],
) -> None:
    client, _ = gateway
    slug = f"where-{uuid.uuid4().hex[:8]}"
    store = await client.post("/stores", json={"slug": slug, "name": "W"}, headers=auth(OWNER))
    assert store.headers["location"] == f"/stores/{slug}"
    product = await client.post(
        "/products",
        json={"store_slug": slug, "category_id": 1, "name": "n", "price_cents": 1, "stock": 1},
        headers=auth(OWNER),
    )
    assert product.headers["location"] == f"/products/{product.json()['id']}"
    assert (await client.get(product.headers["location"])).status_code == 200


async def test_a_queued_order_applied_here_refreshes_the_product_page(
    gateway: tuple[httpx.AsyncClient, Services], catalog_database_url: str
) -> None:
    """The gateway's queue poller runs the order worker in the same process: the stock it
    takes shows at once too."""
    client, services = gateway
    word = f"zq{uuid.uuid4().hex[:6]}"
    product, _ = await listed(client, word, stock=2)
    assert (await client.get(f"/products/{product}")).json()["stock_available"] == 2
    fund(catalog_database_url, "queued-buyer", 100_000)
    rows = sql(
        catalog_database_url,
        "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
        "total_cents, status, idempotency_key) SELECT 'queued-buyer', id, store_id, 2, "
        "price_cents, 2 * price_cents, 'queued', 'fresh-key' FROM products WHERE id = %s "
        "RETURNING id::text",
        product,
    )
    message = f'{{"order_id": "{rows[0][0]}", "product_id": "{product}"}}'
    result = await order_worker(
        services,
        {"Records": [{"messageId": "m1", "body": message, "eventSource": "aws:sqs"}]},
    )
    assert result == {"batchItemFailures": []}
    detail = (await client.get(f"/products/{product}")).json()
    assert detail["stock_available"] == 0 and detail["sold_count"] == 2

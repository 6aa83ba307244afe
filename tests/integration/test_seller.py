"""The seller's side of the store function: create stores and listings, edit, payouts."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for
from tests.support.tokens import TOKEN_LIFETIME_S

pytestmark = pytest.mark.anyio
SECRET = "seller-tests-secret-of-at-least-32-bytes"


def token(sub: str, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + TOKEN_LIFETIME_S, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


@asynccontextmanager
async def seller_gateway(
    database_url: str, peer: str, rate_limits: tuple[tuple[str, int, int], ...]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway on `database_url` that takes this module's tokens, calling
    from `peer` with `rate_limits` (group, limit, window) overriding the defaults."""
    settings = settings_for(
        database_url, jwt_secret=SECRET, cursor_secret="s", rate_limit_overrides=rate_limits
    )
    services = Services.from_settings(settings)
    async with open_gateway(services, peer=(peer, 1), base_url="http://t") as client:
        yield client


@pytest.fixture(scope="module")
async def seller_client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = (("listings", 1000, 60), ("store", 1000, 60), ("search", 1000, 60))
    async with seller_gateway(catalog_database_url, "203.0.113.30", limits) as client:
        yield client


def slug() -> str:
    return f"shop-{uuid.uuid4().hex[:10]}"


async def new_store(client: httpx.AsyncClient, owner: str) -> str:
    store_slug = slug()
    response = await client.post(
        "/stores", json={"slug": store_slug, "name": "Shop"}, headers=token(owner)
    )
    assert response.status_code == 201, response.text
    return store_slug


def listing(store: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "store_slug": store,
        "category_id": 1,
        "name": f"Widget {uuid.uuid4().hex[:6]}",
        "price_cents": 1999,
        "stock": 5,
    }
    return {**body, **overrides}


async def test_create_store(seller_client: httpx.AsyncClient) -> None:
    store_slug = slug()
    body = {"slug": store_slug, "name": "Alice's", "description": "Hand-thrown pots"}
    assert (await seller_client.post("/stores", json=body)).status_code == 401
    created = await seller_client.post("/stores", json=body, headers=token("alice"))
    assert created.status_code == 201
    assert created.json()["slug"] == store_slug and created.json()["product_count"] == 0
    taken = await seller_client.post("/stores", json=body, headers=token("bob"))
    assert taken.status_code == 409 and taken.json()["code"] == "store_slug_taken"
    page = await seller_client.get(f"/stores/{store_slug}")
    assert page.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({"slug": "AB", "name": "x"}, 422, {"slug"}),
        ({"slug": "good-slug", "name": ""}, 422, {"name"}),
        ({"slug": "good-slug", "name": "x", "owner": "me"}, 422, {"owner"}),
        ({"name": "x"}, 422, {"slug"}),
        ([], 422, {"body"}),
    ],
)
async def test_create_store_validation(
    seller_client: httpx.AsyncClient, body: Any, status: int, fields: set[str]
) -> None:
    response = await seller_client.post("/stores", json=body, headers=token("carol"))
    assert response.status_code == status
    assert {e["field"] for e in response.json()["errors"]} == fields


async def test_invalid_json_is_400(seller_client: httpx.AsyncClient) -> None:
    for content in (b"", b"{", b'{"slug": NaN}', b"\xff"):
        response = await seller_client.post(
            "/stores",
            content=content,
            headers={**token("dave"), "Content-Type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid_json"


async def test_a_new_listing_is_live_at_once_and_pending(seller_client: httpx.AsyncClient) -> None:
    store_slug = await new_store(seller_client, "erin")
    created = await seller_client.post("/products", json=listing(store_slug), headers=token("erin"))
    assert created.status_code == 201
    product = created.json()
    assert product["quality_score"] is None and product["in_stock"] is True
    detail = await seller_client.get(f"/products/{product['id']}")
    assert detail.status_code == 200 and detail.json()["stock_available"] == 5
    page = (await seller_client.get(f"/stores/{store_slug}")).json()
    assert [p["id"] for p in page["products"]] == [product["id"]]
    found = await seller_client.get("/marketplace/search", params={"q": product["name"]})
    assert product["id"] in [p["id"] for p in found.json()["results"]]


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"price_cents": "1999"}, {"price_cents"}),
        ({"price_cents": 0}, {"price_cents"}),
        ({"stock": 1.5}, {"stock"}),
        ({"stock": -1}, {"stock"}),
        ({"currency": "usd"}, {"currency"}),
        ({"category_id": 999999}, {"category_id"}),
        ({"store_slug": "no-such-store"}, {"store_slug"}),
    ],
)
async def test_listing_validation(
    seller_client: httpx.AsyncClient, overrides: dict[str, Any], fields: set[str]
) -> None:
    store_slug = await new_store(seller_client, "frank")
    response = await seller_client.post(
        "/products", json=listing(store_slug, **overrides), headers=token("frank")
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == fields


async def test_only_the_owner_lists_and_edits(seller_client: httpx.AsyncClient) -> None:
    store_slug = await new_store(seller_client, "gina")
    intruder = await seller_client.post(
        "/products", json=listing(store_slug), headers=token("harry")
    )
    assert intruder.status_code == 403 and intruder.json()["code"] == "forbidden"
    product = (
        await seller_client.post("/products", json=listing(store_slug), headers=token("gina"))
    ).json()
    edit = await seller_client.patch(
        f"/products/{product['id']}", json={"price_cents": 2500}, headers=token("harry")
    )
    assert edit.status_code == 403


async def test_patch_changes_and_hides(seller_client: httpx.AsyncClient) -> None:
    store_slug = await new_store(seller_client, "ivy")
    product = (
        await seller_client.post("/products", json=listing(store_slug), headers=token("ivy"))
    ).json()
    url = f"/products/{product['id']}"
    assert (await seller_client.get(url)).status_code == 200  # now cached in this process
    changed = await seller_client.patch(
        url, json={"price_cents": 2500, "stock": 0}, headers=token("ivy")
    )
    assert changed.status_code == 200
    assert changed.json()["price_cents"] == 2500 and changed.json()["in_stock"] is False
    assert (await seller_client.get(url)).json()["price_cents"] == 2500  # served new at once
    hidden = await seller_client.patch(url, json={"is_available": False}, headers=token("ivy"))
    assert hidden.status_code == 200
    assert (await seller_client.get(url)).status_code == 404
    empty = await seller_client.patch(url, json={}, headers=token("ivy"))
    assert empty.status_code == 422
    strict = await seller_client.patch(url, json={"is_available": "yes"}, headers=token("ivy"))
    assert strict.status_code == 422
    unknown = await seller_client.patch(
        f"/products/{uuid.uuid4()}", json={"stock": 1}, headers=token("ivy")
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "product_not_found"


async def test_listings_kill_switch(
    seller_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    store_slug = await new_store(seller_client, "jack")
    with psycopg.connect(catalog_database_url) as conn:
        conn.execute("UPDATE kill_switches SET enabled = true WHERE name = 'listings'")
    try:
        refused = await seller_client.post(
            "/products", json=listing(store_slug), headers=token("jack")
        )
        assert refused.status_code == 503
        assert refused.json()["code"] == "listings_disabled"
        assert int(refused.headers["retry-after"]) >= 1
    finally:
        with psycopg.connect(catalog_database_url) as conn:
            conn.execute("UPDATE kill_switches SET enabled = false WHERE name = 'listings'")


async def test_payouts_for_the_owner_only(
    seller_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    store_slug = await new_store(seller_client, "kate")
    product = (
        await seller_client.post("/products", json=listing(store_slug), headers=token("kate"))
    ).json()
    with psycopg.connect(catalog_database_url) as conn:
        for _ in range(3):
            conn.execute(
                "WITH o AS (INSERT INTO orders (user_sub, product_id, store_id, quantity, "
                "unit_price_cents, total_cents, status) SELECT 'buyer-1', id, store_id, 1, 1999, "
                "1999, 'completed' FROM products WHERE id = %s RETURNING id, store_id) "
                "INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents) "
                "SELECT id, store_id, 1799, 200 FROM o",
                [product["id"]],
            )
    mine = await seller_client.get(
        f"/stores/{store_slug}/payouts", params={"limit": 2}, headers=token("kate")
    )
    assert mine.status_code == 200
    body = mine.json()
    assert (body["total_cents"], body["total_fee_cents"]) == (3 * 1799, 3 * 200)
    assert len(body["payouts"]) == 2 and body["next_cursor"]
    rest = await seller_client.get(
        f"/stores/{store_slug}/payouts",
        params={"limit": 2, "cursor": body["next_cursor"]},
        headers=token("kate"),
    )
    assert len(rest.json()["payouts"]) == 1 and rest.json()["next_cursor"] is None
    assert mine.headers["cache-control"] == "no-store"
    other = await seller_client.get(f"/stores/{store_slug}/payouts", headers=token("leo"))
    assert other.status_code == 404 and other.json()["code"] == "store_not_found"
    anonymous = await seller_client.get(f"/stores/{store_slug}/payouts")
    assert anonymous.status_code == 401


async def test_listing_quota_is_per_user(catalog_database_url: str) -> None:
    settings = settings_for(
        catalog_database_url, jwt_secret=SECRET, rate_limit_overrides=(("listings", 2, 60),)
    )
    services = Services.from_settings(settings)
    async with open_gateway(services, peer=("203.0.113.31", 1), base_url="http://t") as client:
        statuses = {}
        for user in ("mia", "ned"):
            statuses[user] = [
                (
                    await client.post(
                        "/stores", json={"slug": slug(), "name": "S"}, headers=token(user)
                    )
                ).status_code
                for _ in range(3)
            ]
    assert statuses == {"mia": [201, 201, 429], "ned": [201, 201, 429]}

"""GET /stores/{slug} and GET /products/{id} through the gateway."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

pytestmark = pytest.mark.anyio


def one(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.encode(), args or None).fetchone()
    assert row is not None
    return row[0]


async def walk_store(client: httpx.AsyncClient, slug: str, **params: Any) -> list[dict[str, Any]]:
    products: list[dict[str, Any]] = []
    cursor = None
    for _ in range(500):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/stores/{slug}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        products += body["products"]
        cursor = body["next_cursor"]
        if cursor is None:
            return products
    raise AssertionError("store pages did not end")


async def test_store_page_walks_every_listed_product_once(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    slug = one(catalog_database_url, "SELECT slug FROM stores ORDER BY slug LIMIT 1")
    first = await catalog_client.get(f"/stores/{slug}")
    assert first.status_code == 200
    store = first.json()["store"]
    assert set(store) == {"slug", "name", "description", "rating", "product_count", "created_at"}
    expected = one(
        catalog_database_url,
        "SELECT count(*) FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE s.slug = %s AND p.is_available AND p.is_approved",
        slug,
    )
    assert store["product_count"] == expected
    products = await walk_store(catalog_client, slug, limit=7)
    ids = [p["id"] for p in products]
    assert len(ids) == len(set(ids)) == expected
    created = [p["created_at"] for p in products]
    assert created == sorted(created, reverse=True)
    assert first.headers["cache-control"].startswith("public, max-age=0, s-maxage=120")


async def test_unknown_or_inactive_store_is_404(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    missing = await catalog_client.get("/stores/no-such-store")
    assert missing.status_code == 404 and missing.json()["code"] == "store_not_found"
    slug = one(catalog_database_url, "SELECT slug FROM stores ORDER BY slug DESC LIMIT 1")
    with psycopg.connect(catalog_database_url) as conn:
        conn.execute("UPDATE stores SET is_active = false WHERE slug = %s", [slug])
    try:
        inactive = await catalog_client.get(f"/stores/{slug}", params={"limit": 3})
        assert inactive.status_code == 404
    finally:
        with psycopg.connect(catalog_database_url) as conn:
            conn.execute("UPDATE stores SET is_active = true WHERE slug = %s", [slug])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"page": "2"}, "page"),
        ({"cursor": "forged"}, "cursor"),
    ],
)
async def test_store_page_bad_input_is_422(
    catalog_client: httpx.AsyncClient,
    catalog_database_url: str,
    params: dict[str, str],
    field: str,
) -> None:
    slug = one(catalog_database_url, "SELECT slug FROM stores ORDER BY slug LIMIT 1")
    response = await catalog_client.get(f"/stores/{slug}", params=params)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_product_detail(catalog_client: httpx.AsyncClient, catalog_database_url: str) -> None:
    product_id = one(
        catalog_database_url,
        "SELECT id::text FROM products WHERE is_available AND is_approved ORDER BY id LIMIT 1",
    )
    response = await catalog_client.get(f"/products/{product_id}")
    assert response.status_code == 200
    product = response.json()
    assert product["id"] == product_id
    assert {"description", "stock_available", "store", "in_stock"} <= set(product)
    assert product["in_stock"] == (product["stock_available"] > 0)
    assert response.headers["cache-control"].startswith("public, max-age=0, s-maxage=120")


async def test_product_not_found_cases(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    not_uuid = await catalog_client.get("/products/not-a-uuid")
    assert not_uuid.status_code == 422 and not_uuid.json()["errors"][0]["field"] == "product_id"
    unknown = await catalog_client.get(f"/products/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["code"] == "product_not_found"
    unavailable = one(
        catalog_database_url, "SELECT id::text FROM products WHERE NOT is_available LIMIT 1"
    )
    hidden = await catalog_client.get(f"/products/{unavailable}")
    assert hidden.status_code == 404


async def test_views_are_buffered_not_written(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    product_id = one(
        catalog_database_url,
        "SELECT id::text FROM products WHERE is_available AND is_approved ORDER BY id DESC LIMIT 1",
    )
    before = one(catalog_database_url, "SELECT view_count FROM products WHERE id = %s", product_id)
    for _ in range(3):
        assert (await catalog_client.get(f"/products/{product_id}")).status_code == 200
    after = one(catalog_database_url, "SELECT view_count FROM products WHERE id = %s", product_id)
    assert after == before  # counted in the buffer, flushed later by refresh_views

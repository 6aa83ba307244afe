"""GET /marketplace/home through the gateway, on a seeded catalog."""

from __future__ import annotations

import httpx
import psycopg
import pytest

pytestmark = pytest.mark.anyio

PRODUCT_KEYS = {
    "id",
    "name",
    "price_cents",
    "currency",
    "store",
    "category_id",
    "sold_count",
    "rating",
    "quality_score",
    "in_stock",
    "created_at",
}


async def test_home_shape_and_orderings(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    response = await catalog_client.get("/marketplace/home")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"categories", "hot", "top_rated", "new_arrivals", "generated_at"}
    assert body["generated_at"].endswith("Z")
    for name in ("hot", "top_rated", "new_arrivals"):
        assert 0 < len(body[name]) <= 10
        for product in body[name]:
            assert set(product) == PRODUCT_KEYS
            assert set(product["store"]) == {"slug", "name"}
            assert product["created_at"].endswith("Z")
    sold = [p["sold_count"] for p in body["hot"]]
    assert sold == sorted(sold, reverse=True)
    created = [p["created_at"] for p in body["new_arrivals"]]
    assert created == sorted(created, reverse=True)
    # Pending listings (no score yet) rank as an average one: 50 (listing_rank_score).
    ranks = [50 if p["quality_score"] is None else p["quality_score"] for p in body["top_rated"]]
    assert ranks == sorted(ranks, reverse=True)
    with psycopg.connect(catalog_database_url) as conn:
        expected = dict(
            conn.execute(
                "SELECT c.slug, count(p.id) FROM categories c LEFT JOIN products p ON "
                "p.category_id = c.id AND p.is_available AND p.is_approved GROUP BY c.slug"
            ).fetchall()
        )
        top_sold = conn.execute(
            "SELECT max(sold_count) FROM products WHERE is_available AND is_approved"
        ).fetchone()
    assert {c["slug"]: c["product_count"] for c in body["categories"]} == expected
    assert top_sold == (sold[0],)


async def test_etag_and_304(catalog_client: httpx.AsyncClient) -> None:
    first = await catalog_client.get("/marketplace/home")
    assert first.headers["cache-control"] == (
        "public, max-age=0, s-maxage=60, stale-while-revalidate=300, stale-if-error=86400"
    )
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = await catalog_client.get("/marketplace/home", headers={"If-None-Match": header})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    miss = await catalog_client.get("/marketplace/home", headers={"If-None-Match": '"other"'})
    assert miss.status_code == 200 and miss.content == first.content


async def test_home_rejects_other_methods(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.post("/marketplace/home")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"

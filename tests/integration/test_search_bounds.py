"""Every search's work is bounded: a query of excluded words only is refused, a broad
multi-word query is ranked within the best-rated listings, multi-word column orders walk their
index, and a search that runs past SEARCH_STATEMENT_TIMEOUT_MS is a 503 that does not trip the
circuit breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

import functions.search.app as search_app
from edgemart.services import Services
from functions.search.app import WALK_WINDOW, SearchParams, build_search_sql, build_window_sql
from tests.conftest import open_gateway, settings_for
from tests.support.sql import sql

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def bounded(catalog_database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    settings = settings_for(
        catalog_database_url,
        cursor_secret="s",
        search_statement_timeout_ms=300,
        circuit_failure_threshold=2,
        rate_limit_overrides=(("search", 0, 60),),
    )
    services = Services.from_settings(settings)
    async with open_gateway(services, peer=("203.0.113.50", 1), base_url="http://t") as client:
        yield client, services


@pytest.mark.parametrize(
    "q", ["-lamp -chair -oak", "-lamp", "the -lamp", "lamp or -chair", "-lamp or -oak"]
)
async def test_excluded_words_alone_are_refused(
    bounded: tuple[httpx.AsyncClient, Services], q: str
) -> None:
    client, _ = bounded
    for sort in ("relevance", "newest", "price_asc"):
        response = await client.get("/marketplace/search", params={"q": q, "sort": sort})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == ["q"]


@pytest.mark.parametrize("q", ["lamp -chair", "t-shirt", "oak -", "lamp"])
async def test_queries_with_a_word_to_find_run(
    bounded: tuple[httpx.AsyncClient, Services], q: str
) -> None:
    client, _ = bounded
    response = await client.get("/marketplace/search", params={"q": q})
    assert response.status_code == 200, response.text


async def test_a_search_past_its_timeout_is_503_and_spares_the_breaker(
    bounded: tuple[httpx.AsyncClient, Services], catalog_database_url: str
) -> None:
    client, services = bounded
    # A lock the search must wait for makes it outlast its timeout deterministically.
    async with await psycopg.AsyncConnection.connect(catalog_database_url) as blocker:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            responses = [
                await client.get("/marketplace/search", params={"q": f"oak chair {index}"})
                for index in range(4)
            ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "search_timeout"
        assert response.headers["retry-after"] == "5"
        assert response.headers["cache-control"] == "no-store"
    breaker = services.replica.breaker
    assert breaker is not None and breaker.state == "closed"
    after = await client.get("/marketplace/search", params={"q": "oak chair"})
    assert after.status_code == 200


async def walk_pages(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        response = await client.get(
            "/marketplace/search", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        results.extend(response.json()["results"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return results
    raise AssertionError("pagination did not end")


def best_rated_ids(url: str, count: int) -> list[str]:
    rows = sql(
        url,
        "SELECT id::text FROM products WHERE is_available AND is_approved "
        "ORDER BY listing_rank_score(quality_score) DESC, rating DESC NULLS LAST, id "
        "LIMIT %s",
        count,
    )
    return [row[0] for row in rows]


def ranks(url: str, q: str, ids: list[str]) -> list[tuple[float, float]]:
    """Each product's relevance keys for `q`, computed on the spot."""
    rows = sql(
        url,
        "SELECT p.id::text, round(ts_rank_cd(p.search_vector, query.q)::numeric, 6)::float8, "
        "listing_rank_score(p.quality_score)::float8 FROM products p, "
        "websearch_to_tsquery('english', %s) AS query(q) "
        "WHERE p.id = ANY(%s::uuid[]) AND p.search_vector @@ query.q",
        q,
        ids,
    )
    keys = {row[0]: (row[1], row[2]) for row in rows}
    return [keys[product_id] for product_id in ids]


async def test_a_broad_query_is_ranked_within_the_best_rated(
    bounded: tuple[httpx.AsyncClient, Services],
    catalog_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made broad by small bounds: every result lies in the best-rated window, in relevance
    order, each once, and the pages end where the window's matches end."""
    monkeypatch.setattr(search_app, "BROAD_MATCHES", 40)
    monkeypatch.setattr(search_app, "QUALITY_WINDOW", 120)
    client, _ = bounded
    q = "ships packaging"
    results = await walk_pages(client, {"q": q, "limit": 7})
    ids = [result["id"] for result in results]
    window = best_rated_ids(catalog_database_url, 120)
    assert ids and len(ids) == len(set(ids)) and set(ids) <= set(window)
    keys = ranks(catalog_database_url, q, ids)
    assert keys == sorted(keys, reverse=True)
    [(matches,)] = sql(
        catalog_database_url,
        "SELECT count(*) FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.id = ANY(%s::uuid[]) AND s.is_active "
        "AND p.search_vector @@ websearch_to_tsquery('english', %s)",
        window,
        q,
    )
    assert len(ids) == matches


async def test_a_narrow_multi_word_query_is_exact(
    bounded: tuple[httpx.AsyncClient, Services],
    catalog_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search_app, "QUALITY_WINDOW", 1)  # would show if the window served it
    client, _ = bounded
    results = await walk_pages(client, {"q": "oak chair", "limit": 5})
    [(expected,)] = sql(
        catalog_database_url,
        "SELECT count(*) FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active "
        "AND p.search_vector @@ websearch_to_tsquery('english', 'oak chair')",
    )
    assert len(results) == expected > 1


@pytest.mark.parametrize("sort", ["price_asc", "price_desc", "newest", "popular"])
async def test_multi_word_column_orders_walk_to_the_exact_pages(
    bounded: tuple[httpx.AsyncClient, Services], catalog_database_url: str, sort: str
) -> None:
    """A multi-word query in a column order now walks that column's index first: its pages
    are the exact plan's pages."""
    params = SearchParams("ships packaging", None, None, None, sort, 6, None)
    async with await psycopg.AsyncConnection.connect(
        catalog_database_url, row_factory=dict_row
    ) as conn:
        walked = await (await conn.execute(*build_window_sql(params, None, WALK_WINDOW))).fetchall()
        exact = await (await conn.execute(*build_search_sql(params, None))).fetchall()
    assert len(walked) == 7  # the walk filled the page (limit + 1)
    assert [row["item"]["id"] for row in walked] == [row["item"]["id"] for row in exact]

"""GET /marketplace/search and /popular through the gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from functions.search.app import WALK_WINDOW, SearchParams, build_terms_sql
from gateway.app import create_gateway
from gateway.democatalog import seed_catalog
from tests.conftest import DEMO_AS_OF, open_gateway, settings_for
from tests.support.tokens import SECRET, auth

pytestmark = pytest.mark.anyio

SORTS = ["relevance", "price_asc", "price_desc", "newest", "popular"]


async def walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/marketplace/search", params=page_params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["results"]) <= int(params.get("limit", 20))
        results.extend(body["results"])
        cursor = body["next_cursor"]
        if cursor is None:
            return results
    raise AssertionError("pagination did not end")


def matching_ids(url: str, where: str, args: list[Any]) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            (
                "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
                f"WHERE p.is_available AND p.is_approved AND s.is_active AND {where}"
            ).encode(),
            args,
        ).fetchall()
    return {row[0] for row in rows}


@pytest.mark.parametrize("sort", SORTS)
async def test_every_sort_is_sorted_and_complete(
    catalog_client: httpx.AsyncClient, catalog_database_url: str, sort: str
) -> None:
    results = await walk(catalog_client, {"q": "chair", "sort": sort, "limit": 7})
    expected = matching_ids(
        catalog_database_url, "p.search_vector @@ websearch_to_tsquery('english', %s)", ["chair"]
    )
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)) and set(ids) == expected and expected
    if sort == "price_asc":
        assert [r["price_cents"] for r in results] == sorted(r["price_cents"] for r in results)
    if sort == "price_desc":
        prices = [r["price_cents"] for r in results]
        assert prices == sorted(prices, reverse=True)
    if sort == "newest":
        created = [r["created_at"] for r in results]
        assert created == sorted(created, reverse=True)
    if sort == "popular":
        sold = [r["sold_count"] for r in results]
        assert sold == sorted(sold, reverse=True)


def relevance_order(url: str, q: str, where: str = "true", args: tuple[Any, ...] = ()) -> list[str]:
    """Every match of `q` in relevance order, ranked on the spot (the exact query's keys)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            (
                "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id, "
                "websearch_to_tsquery('english', %s) AS query(q) "
                "WHERE p.is_available AND p.is_approved AND s.is_active "
                f"AND p.search_vector @@ query.q AND {where} "
                "ORDER BY round(ts_rank_cd(p.search_vector, query.q)::numeric, 6) DESC, "
                "listing_rank_score(p.quality_score)::numeric DESC, p.id DESC"
            ).encode(),
            [q, *args],
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"q": "chair", "limit": 7}, "true", ()),
        ({"q": "Lamps", "limit": 50}, "true", ()),
        ({"q": "oak", "limit": 3}, "true", ()),
        ({"q": "leather", "limit": 20}, "true", ()),
        (
            {"q": "chair", "category": "chairs", "limit": 5},
            "p.category_id = (SELECT id FROM categories WHERE slug = %s)",
            ("chairs",),
        ),
        (
            {"q": "lamp", "min_price": 1000, "max_price": 6000, "limit": 4},
            "p.price_cents BETWEEN %s AND %s",
            (1000, 6000),
        ),
        ({"q": "zzzzqx", "limit": 5}, "true", ()),  # no match at all
        ({"q": "the", "limit": 5}, "true", ()),  # a stop word: an empty query
    ],
)
async def test_one_word_relevance_is_the_exact_order(
    catalog_client: httpx.AsyncClient,
    catalog_database_url: str,
    params: dict[str, Any],
    where: str,
    args: tuple[Any, ...],
) -> None:
    """One-word queries by relevance are served from search_terms (migration 0013) when the
    walk fills the page: every page, in order, is what ranking every match would give."""
    results = await walk(catalog_client, {**params, "sort": "relevance"})
    expected = relevance_order(catalog_database_url, str(params["q"]), where, args)
    assert [r["id"] for r in results] == expected


async def test_the_term_walk_serves_common_words(catalog_database_url: str) -> None:
    """The test above would pass if every page fell back to the exact query: this one shows
    the walk itself filling pages, first and later, with the exact query's rows."""
    url = catalog_database_url
    params = SearchParams("chair", None, None, None, "relevance", 5, None)
    expected = relevance_order(url, "chair")
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        position = None
        for page in range(3):
            sql, args = build_terms_sql(params, position, WALK_WINDOW)
            rows = await (await conn.execute(sql, args)).fetchall()
            assert len(rows) == 6, page  # filled: limit + 1
            assert [row["item"]["id"] for row in rows] == expected[page * 5 : page * 5 + 6]
            position = [rows[4][f"k{index}"] for index in range(3)]


async def test_filters(catalog_client: httpx.AsyncClient, catalog_database_url: str) -> None:
    params = {"category": "lamps", "min_price": "1000", "max_price": "4000", "limit": "50"}
    results = await walk(catalog_client, params)
    expected = matching_ids(
        catalog_database_url,
        "p.category_id = (SELECT id FROM categories WHERE slug = 'lamps') "
        "AND p.price_cents BETWEEN 1000 AND 4000",
        [],
    )
    assert {r["id"] for r in results} == expected
    assert all(1000 <= r["price_cents"] <= 4000 for r in results)


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({}, {"q"}),
        ({"q": ""}, {"q"}),
        ({"q": "x" * 201}, {"q"}),
        ({"q": "a", "limit": "0"}, {"limit"}),
        ({"q": "a", "limit": "51"}, {"limit"}),
        ({"q": "a", "limit": "1.5"}, {"limit"}),
        ({"q": "a", "min_price": "-1"}, {"min_price"}),
        ({"q": "a", "min_price": "10", "max_price": "5"}, {"min_price"}),
        ({"q": "a", "max_price": "abc"}, {"max_price"}),
        ({"q": "a", "sort": "cheapest"}, {"sort"}),
        ({"q": "a", "color": "red"}, {"color"}),
        ({"q": "a", "cursor": "forged.cursor"}, {"cursor"}),
    ],
)
async def test_bad_input_is_422(
    catalog_client: httpx.AsyncClient, params: dict[str, str], fields: set[str]
) -> None:
    response = await catalog_client.get("/marketplace/search", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert {error["field"] for error in body["errors"]} == fields


async def test_a_modified_cursor_is_422(catalog_client: httpx.AsyncClient) -> None:
    first = (
        await catalog_client.get("/marketplace/search", params={"q": "chair", "limit": 2})
    ).json()
    cursor = first["next_cursor"]
    assert cursor
    payload, signature = cursor.split(".")
    tampered = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature
    for bad in (tampered, cursor + "x", signature + "." + payload):
        response = await catalog_client.get(
            "/marketplace/search", params={"q": "chair", "limit": 2, "cursor": bad}
        )
        assert response.status_code == 422, bad
    # A valid cursor of another query is refused too.
    other = await catalog_client.get(
        "/marketplace/search", params={"q": "lamp", "limit": 2, "cursor": cursor}
    )
    assert other.status_code == 422


async def test_popular_searches_shape(
    catalog_client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    with psycopg.connect(catalog_database_url) as conn:
        conn.execute(
            "INSERT INTO popular_searches "
            "(query, total_count, current_count, previous_count, peak_clients) "
            "VALUES ('office chair', 120, 40, 10, 40), ('lamp', 300, 5, 9, 30), "
            "('rug', 7, 1, 1, 5), ('few clients', 900, 4, 0, 4), ('hidden', 800, 50, 0, 50)"
        )
        conn.execute("INSERT INTO hidden_searches (query, hidden_by) VALUES ('hidden', 'root')")
    response = await catalog_client.get("/marketplace/search/popular")
    assert response.status_code == 200
    assert response.json() == {
        "searches": [
            {"query": "lamp", "count": 300, "trending": False},
            {"query": "office chair", "count": 120, "trending": True},
            {"query": "rug", "count": 7, "trending": False},
        ]
    }
    assert response.headers["cache-control"].startswith("public, max-age=0, s-maxage=60")


EVENT = json.loads((Path(__file__).parents[1] / "events/eventbridge_scheduled.json").read_text())
MIN_CLIENTS = 3


class Clients:
    """One gateway, reached from any client address (ASGITransport's `client`)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.app = create_gateway(services)

    def at(self, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def search(self, ip: str, q: str, **headers: str) -> httpx.Response:
        async with self.at(ip) as client:
            return await client.get("/marketplace/search", params={"q": q}, headers=headers)

    async def popular(self) -> dict[str, dict[str, Any]]:
        """The public list, after a refresh_views run (the list's own cache forgotten: it
        would serve the previous list for a minute)."""
        report = await refresh_views(self.services, EVENT)
        assert report["failed_steps"] == [], report
        self.services.cache.invalidate("popular_searches")
        async with self.at("192.0.2.250") as client:
            response = await client.get("/marketplace/search/popular")
        assert response.status_code == 200
        return {entry["query"]: entry for entry in response.json()["searches"]}


@pytest.fixture(scope="module")
async def clients(catalog_database_url: str) -> AsyncIterator[Clients]:
    services = Services.from_settings(
        settings_for(
            catalog_database_url,
            jwt_secret=SECRET,
            cursor_secret="popular-tests-cursor-secret",
            popular_search_min_clients=MIN_CLIENTS,
            rate_limit_overrides=tuple((group, 0, 60) for group in ("search", "admin")),
        )
    )
    yield Clients(services)
    await services.aclose()


def clients_counted(url: str, query: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT total_count FROM popular_searches WHERE query = %s", [query]
        ).fetchone()
    return None if row is None else int(row[0])


async def test_one_client_searching_many_times_counts_once(
    clients: Clients, catalog_database_url: str
) -> None:
    for _ in range(25):
        assert (await clients.search("198.51.100.10", "Walnut")).status_code == 200
    assert "walnut" not in await clients.popular()
    assert clients_counted(catalog_database_url, "walnut") == 1
    for _ in range(5):  # the same client again, after a flush: still the same period
        await clients.search("198.51.100.10", "walnut")
    assert "walnut" not in await clients.popular()
    assert clients_counted(catalog_database_url, "walnut") == 1
    # A signed-in client is its token subject, wherever it searches from.
    for ip in ("198.51.100.11", "198.51.100.12", "198.51.100.13"):
        await clients.search(ip, "walnut", **auth("walnut-fan"))
    assert "walnut" not in await clients.popular()
    assert clients_counted(catalog_database_url, "walnut") == 2


async def test_enough_distinct_clients_list_a_query_once(
    clients: Clients, catalog_database_url: str
) -> None:
    first = await clients.search("198.51.100.20", "teak")
    etag = first.headers["etag"]
    revalidated = await clients.search("198.51.100.21", "teak", **{"If-None-Match": etag})
    assert revalidated.status_code == 304  # served from the cached page: counted too
    assert "teak" not in await clients.popular()  # 2 clients < MIN_CLIENTS
    await clients.search("198.51.100.22", "teak", **auth("teak-buyer"))
    listed = await clients.popular()
    assert listed["teak"] == {"query": "teak", "count": MIN_CLIENTS, "trending": True}
    assert list(listed).count("teak") == 1


async def test_refused_empty_and_continued_searches_are_not_counted(
    clients: Clients, catalog_database_url: str
) -> None:
    for index in range(MIN_CLIENTS + 1):
        ip = f"198.51.100.{30 + index}"
        refused = await clients.search(ip, "marble", Authorization="Bearer not-a-token")
        assert refused.status_code == 401
        empty = await clients.search(ip, "free money at evil.example")
        assert empty.status_code == 200 and empty.json()["results"] == []
    listed = await clients.popular()
    assert "marble" not in listed and "free money at evil.example" not in listed
    assert clients_counted(catalog_database_url, "marble") is None
    assert clients_counted(catalog_database_url, "free money at evil.example") is None
    # A later page (cursor) is not a new search.
    async with clients.at("198.51.100.40") as client:
        page = await client.get("/marketplace/search", params={"q": "cork", "limit": 1})
        cursor = page.json()["next_cursor"]
    for index in range(MIN_CLIENTS + 1):
        async with clients.at(f"198.51.100.{41 + index}") as client:
            response = await client.get(
                "/marketplace/search", params={"q": "cork", "limit": 1, "cursor": cursor}
            )
            assert response.status_code == 200
    await clients.popular()
    assert clients_counted(catalog_database_url, "cork") == 1


async def test_a_hidden_term_leaves_the_list_until_shown_again(
    clients: Clients, catalog_database_url: str
) -> None:
    for index in range(MIN_CLIENTS):
        await clients.search(f"198.51.100.{60 + index}", "copper")
    assert "copper" in await clients.popular()
    admin = auth("root", roles=["admin"])
    async with clients.at("192.0.2.1") as client:
        hidden = await client.put(
            "/admin/popular-searches/hidden",
            headers=admin,
            json={"query": " Copper ", "hidden": True, "reason": "spam"},
        )
    assert hidden.status_code == 200 and hidden.json() == {"query": "copper", "hidden": True}
    await clients.search("198.51.100.70", "copper")  # counting goes on while hidden
    assert "copper" not in await clients.popular()
    assert clients_counted(catalog_database_url, "copper") == MIN_CLIENTS + 1
    async with clients.at("192.0.2.1") as client:
        shown = await client.put(
            "/admin/popular-searches/hidden",
            headers=admin,
            json={"query": "copper", "hidden": False},
        )
    assert shown.json() == {"query": "copper", "hidden": False}
    assert (await clients.popular())["copper"]["count"] == MIN_CLIENTS + 1


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    catalog_seed=st.integers(1, 10_000),
    size=st.integers(20, 250),
    page=st.integers(1, 50),
    sort=st.sampled_from(SORTS),
)
def test_pages_never_repeat_or_skip(
    migrated_database_url: str, catalog_seed: int, size: int, page: int, sort: str
) -> None:
    """Over random catalogs and page sizes, walking the cursors returns every match once."""
    url = migrated_database_url
    seed_catalog(url, products=size, stores=5, seed=catalog_seed, as_of=DEMO_AS_OF, replace=True)
    expected = matching_ids(url, "true", [])

    async def run() -> list[dict[str, Any]]:
        services = Services.from_settings(
            settings_for(url, cursor_secret="s", rate_limit_overrides=(("search", 0, 60),))
        )
        async with open_gateway(services, base_url="http://t") as client:
            results: list[dict[str, Any]] = []
            for category in (
                "chairs",
                "desks",
                "lamps",
                "rugs",
                "kitchen",
                "coffee",
                "audio",
                "cameras",
                "books",
                "stationery",
                "bags",
                "shoes",
                "jackets",
                "jewelry",
                "watches",
                "plants",
                "garden",
                "toys",
                "games",
                "bikes",
                "outdoor",
                "fitness",
                "beauty",
                "pets",
            ):
                results += await walk(client, {"category": category, "sort": sort, "limit": page})
            return results

    results = asyncio.run(run())
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected

"""Search under row-level security (sql/search_cover.sql, docs/decisions/0046): the candidates
a confined search reads through search_terms hold every match, so the application role gets
exactly the owner's pages, and search_cover picks few of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from edgemart.tenancy import DEFAULT_TENANT, SET_TENANT_SQL
from functions.search.app import (
    PAGE_SETUP_SQL,
    SORTS,
    SearchParams,
    build_broad_probe_sql,
    search_page,
)
from tests.support.approle import app_role
from tests.support.sql import sql

pytestmark = pytest.mark.anyio

# Plain words, a rare and a common one, OR branches, a phrase (with a stop word inside),
# negations beside words, a compound, stop words only, words no product holds.
QUERIES = [
    "oak chair",
    "chair",
    "walnut lamp shelf",
    "oak or walnut",
    "lamp or chair desk",
    '"reading lamp"',
    '"lamp of oak"',
    "chair -oak",
    'oak -"desk lamp"',
    "e-mail lamp",
    "the",
    "zzzz qqqq",
    "zzzz or lamp",
]


@pytest.fixture(scope="module")
def app_url(catalog_database_url: str) -> Iterator[str]:
    with app_role(catalog_database_url) as url:
        yield url


def cover(url: str, q: str) -> list[str] | None:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(SET_TENANT_SQL, [str(DEFAULT_TENANT.id)])
        row = conn.execute(
            "SELECT search_cover(websearch_to_tsquery('english', %s))", [q]
        ).fetchone()
    assert row is not None
    return None if row[0] is None else sorted(row[0])


def postings(url: str, lexeme: str) -> int:
    [(count,)] = sql(url, "SELECT count(*) FROM search_terms WHERE lexeme = %s", lexeme)
    return int(count)


def test_the_cover_is_the_rarest_required_word_or_one_per_branch(
    catalog_database_url: str,
) -> None:
    url = catalog_database_url
    assert postings(url, "oak") != postings(url, "chair")
    rarer = min(["oak", "chair"], key=lambda lexeme: (postings(url, lexeme), lexeme))
    assert cover(url, "oak chair") == [rarer]
    assert cover(url, "chair -oak") == ["chair"]  # an excluded word finds nothing
    assert cover(url, "oak or walnut") == ["oak", "walnut"]  # each branch needs its own
    assert cover(url, "zzzz or lamp") == ["lamp", "zzzz"]
    assert cover(url, '"reading lamp"') in (["lamp"], ["read"])  # a phrase needs both words
    assert cover(url, "the") == []  # no word: nothing matches, nothing to read
    # Rarity decides among the required words: zzzz has no entries at all.
    assert cover(url, "lamp zzzz chair") == ["zzzz"]


def test_a_query_it_cannot_cover_is_an_error_not_an_answer(catalog_database_url: str) -> None:
    with psycopg.connect(catalog_database_url) as conn:
        for query in ["lamp:*", "lamp:A & oak", "!lamp | oak", "!lamp"]:
            with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
                conn.execute("SELECT search_cover(%s::tsquery)", [query])
        # Quotes and backslashes in a lexeme survive the round trip through tsquery text.
        row = conn.execute(
            "SELECT search_cover(lexeme_query(%s) && lexeme_query('lamp'))", ["o'ne\\il"]
        ).fetchone()
    assert row is not None and row[0] == ["o'ne\\il"]


async def pages(url: str, params: SearchParams) -> list[list[str]]:
    """Every page of `params` through search_page (which asks whether the role is confined),
    each continuing after the last row of the one before, as the cursor does."""
    found: list[list[str]] = []
    position: list[Any] | None = None
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        for _ in range(200):
            rows = await search_page(
                conn, params, position, timeout_ms=30_000, tenant=DEFAULT_TENANT
            )
            page = rows[: params.limit]
            found.append([row["item"]["id"] for row in page])
            if len(rows) <= params.limit:
                return found
            last = page[-1]
            position = [last[key] for key in sorted(k for k in last if k.startswith("k"))]
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("sort", SORTS)
async def test_the_application_role_gets_the_owners_pages(
    catalog_database_url: str, app_url: str, sort: str
) -> None:
    """Every query shape, every order, with and without filters: page for page the same ids
    as the owner's GIN plans (the superuser is not confined)."""
    compared = 0
    for q in QUERIES:
        for category, prices in [
            (None, (None, None)),
            ("lamps", (None, None)),
            (None, (1000, 6000)),
        ]:
            params = SearchParams(q, category, prices[0], prices[1], sort, 7, None)
            owner = await pages(catalog_database_url, params)
            app = await pages(app_url, params)
            assert app == owner, (q, category, prices)
            compared += sum(len(page) for page in owner)
    assert compared > 200  # the queries found something to compare


def test_only_the_application_role_is_confined(catalog_database_url: str, app_url: str) -> None:
    """What search_page asks to choose its plans: the superuser is not under the policies."""
    for url, confined in [(catalog_database_url, False), (app_url, True)]:
        with psycopg.connect(url) as conn:
            row = conn.execute(PAGE_SETUP_SQL, ["1s"]).fetchone()
        assert row is not None and row[1] is confined


def probe(url: str, params: SearchParams, *, confined: bool) -> int:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(SET_TENANT_SQL, [str(DEFAULT_TENANT.id)])
        row = conn.execute(*build_broad_probe_sql(params, confined=confined)).fetchone()
    assert row is not None
    return int(row[0])


def test_the_probe_counts_the_same_matches(catalog_database_url: str, app_url: str) -> None:
    for q in QUERIES:
        params = SearchParams(q, None, None, None, "relevance", 20, None)
        owner = probe(catalog_database_url, params, confined=False)
        assert probe(app_url, params, confined=True) == owner, q
        assert probe(catalog_database_url, params, confined=True) == owner, q

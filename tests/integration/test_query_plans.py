"""The hot queries use indexes, not a sequential scan of `products`, on a 100k catalog."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from edgemart.homepage import HOME_SQL
from functions.search.app import SORTS, WALK_WINDOW, SearchParams, build_search_sql, build_terms_sql
from functions.store.app import PRODUCT_SQL, STORE_SQL, store_page_sql
from gateway.democatalog import seed_catalog
from tests.conftest import DEMO_AS_OF, throwaway_database


@pytest.fixture(scope="module")
def large_catalog(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    with throwaway_database(postgres_admin_url, template=template_database) as url:
        seed_catalog(url, products=100_000, seed=5, as_of=DEMO_AS_OF)
        yield url


def plan(url: str, sql: bytes | str, args: list[Any] | None = None) -> str:
    statement = sql if isinstance(sql, bytes) else sql.encode()
    with psycopg.connect(url) as conn:
        rows = conn.execute(b"EXPLAIN " + statement, args).fetchall()
    return "\n".join(row[0] for row in rows)


def assert_no_products_seq_scan(text: str) -> None:
    assert "Seq Scan on products" not in text, text


def test_home(large_catalog: str) -> None:
    text = plan(large_catalog, HOME_SQL)
    # Served from the materialized views alone: no scan of the products table at all.
    assert re.search(r" on products\b", text) is None, text


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("shape", ["text", "category", "text+price"])
def test_search(large_catalog: str, sort: str, shape: str) -> None:
    q = "oak chair" if "text" in shape else None
    category = "chairs" if shape == "category" else None
    prices = (1000, 5000) if "price" in shape else (None, None)
    params = SearchParams(q, category, prices[0], prices[1], sort, 20, None)
    if params.sort == "relevance" and q is None:
        params = SearchParams(q, category, prices[0], prices[1], "popular", 20, None)
    sql, args = build_search_sql(params, None)
    assert_no_products_seq_scan(plan(large_catalog, sql, args))


@pytest.mark.parametrize("category", [None, "lamps"])
def test_one_word_relevance_walks_the_term_index(large_catalog: str, category: str | None) -> None:
    params = SearchParams("lamp", category, None, None, "relevance", 20, None)
    sql, args = build_terms_sql(params, None, WALK_WINDOW)
    text = plan(large_catalog, sql, args)
    assert "search_terms_pkey" in text, text
    assert_no_products_seq_scan(text)


def test_store_page_and_product(large_catalog: str) -> None:
    with psycopg.connect(large_catalog) as conn:
        store_id, slug, product_id = conn.execute(
            "SELECT s.id, s.slug, p.id FROM stores s JOIN products p ON p.store_id = s.id LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    assert_no_products_seq_scan(plan(large_catalog, STORE_SQL, [slug]))
    assert_no_products_seq_scan(plan(large_catalog, store_page_sql(False, False), [store_id, 25]))
    assert_no_products_seq_scan(plan(large_catalog, PRODUCT_SQL, [product_id]))

"""The hot queries use indexes, not a sequential scan of `products`, on a 100k catalog."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from edgemart.homepage import HOME_SQL
from edgemart.tenancy import DEFAULT_TENANT_ID, SET_TENANT_SQL
from functions.search.app import (
    SORTS,
    WALK_WINDOW,
    SearchParams,
    build_broad_probe_sql,
    build_search_sql,
    build_terms_sql,
)
from functions.store.app import PRODUCT_SQL, STORE_SQL, store_page_sql
from gateway.democatalog import seed_catalog
from tests.conftest import DEMO_AS_OF, throwaway_database
from tests.support.approle import app_role


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
    assert "search_terms_tenant_pkey" in text, text
    assert_no_products_seq_scan(text)


@pytest.fixture(scope="module")
def app_catalog(large_catalog: str) -> Iterator[str]:
    """The large catalog as a login member of edgemart_app: under row-level security."""
    with app_role(large_catalog) as url:
        yield url


def tenant_plan(url: str, sql: bytes, args: list[Any]) -> str:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(SET_TENANT_SQL, [str(DEFAULT_TENANT_ID)])
        rows = conn.execute(b"EXPLAIN (COSTS OFF) " + sql, args).fetchall()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("q", ["walnut stool", "kilim", "oak or walnut", '"reading lamp" -desk'])
def test_confined_search_finds_candidates_through_index_conditions(
    app_catalog: str, sort: str, q: str
) -> None:
    """As the application role the GIN index cannot serve `@@` (not leakproof): the exact
    plan and the probe find their candidates by text equality on search_terms' key and read
    each product by its id, never scanning the catalog (docs/decisions/0046)."""
    params = SearchParams(q, None, None, None, sort, 20, None)
    for sql, args in [
        build_search_sql(params, None, confined=True),
        build_broad_probe_sql(params, confined=True),
    ]:
        text = tenant_plan(app_catalog, sql, args)
        terms = re.search(
            r"Index (?:Only )?Scan using search_terms_tenant_pkey on search_terms t\s+"
            r"Index Cond: \(\(tenant_id = .*\) AND \(lexeme = ANY \(search_cover\(",
            text,
        )
        assert terms, text
        assert re.search(
            r"Index Scan using products_id_key on products p(?:_\d+)?\s+Index Cond: \(id = ", text
        ), text
        assert_no_products_seq_scan(text)
        assert "Seq Scan on search_terms" not in text, text


def test_unconfined_search_keeps_the_gin_plan(large_catalog: str) -> None:
    """The owner (a superuser here) is not under the policies: its two-word search and probe
    keep the GIN index, as before search_terms served the application role."""
    params = SearchParams("walnut stool", None, None, None, "relevance", 20, None)
    for sql, args in [build_search_sql(params, None), build_broad_probe_sql(params)]:
        text = tenant_plan(large_catalog, sql, args)
        assert "products_search_idx" in text and "search_terms" not in text, text


def test_store_page_and_product(large_catalog: str) -> None:
    with psycopg.connect(large_catalog) as conn:
        store_id, slug, product_id = conn.execute(
            "SELECT s.id, s.slug, p.id FROM stores s JOIN products p ON p.store_id = s.id LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    assert_no_products_seq_scan(plan(large_catalog, STORE_SQL, [slug]))
    assert_no_products_seq_scan(plan(large_catalog, store_page_sql(False, False), [store_id, 25]))
    assert_no_products_seq_scan(plan(large_catalog, PRODUCT_SQL, [product_id]))


def nested_plans(conn: psycopg.Connection[Any], sql: str, args: list[Any]) -> list[str]:
    """The plans of every statement `sql` runs, functions' statements included, as the
    server's auto_explain prints them (skipped where the server does not ship auto_explain,
    as the embedded PostgreSQL does not)."""
    try:
        conn.execute("LOAD 'auto_explain'")
    except psycopg.errors.UndefinedFile:
        pytest.skip("this PostgreSQL has no auto_explain")
    for setting, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_level", "notice"),
    ):
        conn.execute("SELECT set_config(%s, %s, false)", [setting, value])
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    conn.execute(sql, args)
    return plans


def test_purchase_stock_update_finds_the_row_by_primary_key(large_catalog: str) -> None:
    """The generic plan (the one PL/pgSQL keeps after five calls) of purchase()'s stock UPDATE
    must use the primary key: given an equality on price_cents it picked products_price_idx,
    whose entries for a hot product are mostly dead versions (edgemart/sql/purchase.sql)."""
    with psycopg.connect(large_catalog, autocommit=True) as conn:
        product = conn.execute(
            "SELECT id FROM products WHERE is_available AND is_approved AND stock > 0 LIMIT 1"
        ).fetchone()
        assert product is not None
        conn.execute("UPDATE wallets SET balance_cents = 10000000000 WHERE user_sub = 'buyer-1'")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plans = nested_plans(
            conn,
            "SELECT status FROM purchase('buyer-1', 'plan-check', 'fp', %s, 1, NULL, 1000, "
            "'plan-check', interval '1 day', interval '1 s', false, 'USD')",
            [product[0]],
        )
    stock_updates = [text for text in plans if "UPDATE products p" in text]
    assert stock_updates, plans
    # Either unique key on the id: (tenant_id, id), or the id alone (migration 0023).
    found = re.search(
        r"Index Scan using products_(tenant_pkey|id_key) on products p", stock_updates[0]
    )
    assert found, stock_updates[0]


def test_purchase_key_lookup_opens_no_partition_created_ahead(large_catalog: str) -> None:
    """Maintenance creates a week of daily key partitions ahead; purchase()'s key lookup
    (claim_idempotency_key) is bounded a day past the transaction's start, so the generic plan
    prunes all but yesterday's, today's and tomorrow's before execution."""
    with psycopg.connect(large_catalog, autocommit=True) as conn:
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'idempotency_keys'::regclass"
        ).fetchone()
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plans = nested_plans(
            conn,
            "SELECT status FROM purchase('buyer-1', 'lookup-check', 'fp', gen_random_uuid(), "
            "1, NULL, 1000, 'lookup-check', interval '1 day', interval '1 s', false, 'USD')",
            [],
        )
    assert partitions is not None and partitions[0] > 3, "no partitions created ahead"
    lookups = [text for text in plans if "FROM idempotency_keys k" in text]
    assert lookups, plans
    scanned = set(re.findall(r"on (idempotency_keys_\d{8})", lookups[0]))
    assert 1 <= len(scanned) <= 3, lookups[0]


SCALAR_SQL_FUNCTIONS = """
SELECT p.proname, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t)
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND NOT p.proretset
  AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')
ORDER BY p.proname
"""

# Not inlined, and left so: STRICT with a body that is not (a CASE), called once per search
# request, and the search passes it websearch_to_tsquery(...), too costly an argument to be
# copied into a body that reads it three times, so it would not be inlined there anyway.
# tenant_json: its domains are a subquery, which the planner never inlines; the platform
# routes call it once per request.
NOT_INLINED = {"single_lexeme", "tenant_json"}


def test_scalar_sql_functions_inline_into_generic_plans(module_database_url: str) -> None:
    """A scalar SQL function the planner does not inline runs through fmgr_sql, which parses,
    analyses and plans its body again in every statement that calls it. purchase_queue_key
    was one (IMMUTABLE, with a body only STABLE: `text || uuid`), called by every purchase
    (edgemart/sql/purchase_queue_key.sql). Checked on generic plans, where the arguments are
    parameters, so that a call with constants folding away cannot hide it."""
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        functions = conn.execute(SCALAR_SQL_FUNCTIONS).fetchall()
        assert functions, "no SQL functions found"
        conn.execute("SET plan_cache_mode = force_generic_plan")
        not_inlined = []
        for name, argument_types in functions:
            if name in NOT_INLINED:
                continue
            parameters = ", ".join(f"${n}" for n in range(1, len(argument_types) + 1))
            types = f" ({', '.join(argument_types)})" if argument_types else ""
            conn.execute(f"PREPARE inline_check{types} AS SELECT {name}({parameters})".encode())
            nulls = ", ".join("NULL" for _ in argument_types)
            values = f" ({nulls})" if argument_types else ""
            rows = conn.execute(f"EXPLAIN VERBOSE EXECUTE inline_check{values}".encode())
            text = "\n".join(row[0] for row in rows)
            conn.execute("DEALLOCATE inline_check")
            if f"{name}(" in text:
                not_inlined.append(f"{name}: {text}")
    assert not not_inlined, "\n".join(not_inlined)

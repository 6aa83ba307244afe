"""Search under row-level security: the plans and timings of the search paths as the
application role (a member of `edgemart_app`, subject to the tenant policy) against the owner
(a superuser, whom row-level security skips), both with the default tenant set.

    python -m bench.tenancy_migration.search_plans [--products N] [--out PATH]

PostgreSQL evaluates the policy's qual before any of the query's quals that are not
LEAKPROOF, and a qual that must wait for it cannot be an index condition
(restriction_is_securely_promotable): `tsvector @@ tsquery` (ts_match_vq) and numeric
comparisons are not leakproof, so for the application role the GIN index may go unused. Each
path is EXPLAIN ANALYZEd a few times per role (best of 5); the table gives the time, the
buffers and whether the plan scanned products_search_idx.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.database import admin_url, seeded_catalog
from bench.report import database_command, provenance, publish
from edgemart.tenancy import DEFAULT_TENANT_ID, SET_TENANT_SQL
from functions.search.app import (
    QUALITY_WINDOW,
    WALK_WINDOW,
    SearchParams,
    build_broad_probe_sql,
    build_quality_window_sql,
    build_search_sql,
    build_terms_sql,
    build_window_sql,
)

Query = tuple[bytes, list[Any]]


def params(q: str | None, sort: str, **filters: Any) -> SearchParams:
    return SearchParams(
        q,
        filters.get("category"),
        filters.get("min_price"),
        filters.get("max_price"),
        sort,
        20,
        None,
    )


PATHS: dict[str, Callable[[], Query]] = {
    "one word by relevance (term index walk)": lambda: build_terms_sql(
        params("lamp", "relevance"), None, WALK_WINDOW
    ),
    "two words by relevance, exact (GIN)": lambda: build_search_sql(
        params("walnut stool", "relevance"), None
    ),
    "broad two words, match probe (GIN)": lambda: build_broad_probe_sql(
        params("oak lamp", "relevance")
    ),
    "broad two words, quality window": lambda: build_quality_window_sql(
        params("oak lamp", "relevance"), None, QUALITY_WINDOW
    ),
    "rare word by price, exact (GIN)": lambda: build_search_sql(params("kilim", "price_asc"), None),
    "common word by price, window walk": lambda: build_window_sql(
        params("lamp", "price_asc"), None, WALK_WINDOW
    ),
    "category by popularity, price range": lambda: build_search_sql(
        params(None, "popular", category="lamps", min_price=2000, max_price=9000), None
    ),
}


def explain(conn: psycopg.Connection[Any], query: Query) -> tuple[float, int, bool, str]:
    """Best of 5: (ms, shared buffers, GIN index used, plan text)."""
    sql, args = query
    times: list[float] = []
    text = ""
    for _ in range(5):
        with conn.transaction():
            conn.execute(SET_TENANT_SQL, [str(DEFAULT_TENANT_ID)])
            rows = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + sql, args).fetchall()
        text = "\n".join(str(row[0]) for row in rows)
        match = re.search(r"Execution Time: ([\d.]+) ms", text)
        times.append(float(match[1]) if match else float("nan"))
    top = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", text)  # the top node's
    buffers = int(top[1]) + int(top[2] or 0) if top else 0
    return min(times), buffers, "products_search_idx" in text, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/tenancy_migration/SEARCH.md"))
    parser.add_argument("--plans", type=Path, default=None, help="also write every plan here")
    args = parser.parse_args()
    with admin_url() as admin:
        url = seeded_catalog(admin, f"edgemart_bench_search_{args.products}", args.products)
        role = f"edgemart_bench_app_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE edgemart_app".encode())
            conn.execute("ANALYZE")
        try:
            rows, plans = measure(url, make_conninfo(url, user=role))
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP ROLE {role}".encode())
    lines = [
        "# Search paths under row-level security: application role vs owner",
        "",
        *provenance(
            database_command("bench.tenancy_migration.search_plans"),
            setup=f"{args.products:,}-product demo catalog, default tenant set for both roles",
        ),
        "",
        "Best of 5 `EXPLAIN (ANALYZE, BUFFERS)` per path and role; GIN = the plan scans "
        "products_search_idx.",
        "",
        "| path | owner ms | owner buffers | owner GIN | app ms | app buffers | app GIN |",
        "|---|---:|---:|:-:|---:|---:|:-:|",
        *rows,
    ]
    publish(args.out, lines)
    if args.plans:
        args.plans.write_text(plans, encoding="utf-8")


def measure(owner_url: str, app_url: str) -> tuple[list[str], str]:
    rows: list[str] = []
    plans: list[str] = []
    with psycopg.connect(owner_url) as owner, psycopg.connect(app_url) as app:
        for name, build in PATHS.items():
            query = build()
            o_ms, o_buf, o_gin, o_plan = explain(owner, query)
            a_ms, a_buf, a_gin, a_plan = explain(app, query)
            rows.append(
                f"| {name} | {o_ms:.2f} | {o_buf:,} | {'yes' if o_gin else 'no'} "
                f"| {a_ms:.2f} | {a_buf:,} | {'yes' if a_gin else 'no'} |"
            )
            plans += [f"## {name}\n\n### owner\n\n{o_plan}\n\n### app\n\n{a_plan}\n"]
    return rows, "\n".join(plans)


if __name__ == "__main__":
    main()

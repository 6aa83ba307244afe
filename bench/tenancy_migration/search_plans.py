"""Search under row-level security: the plans and timings of the search paths as the
application role (a member of `edgemart_app`, subject to the tenant policy) against the owner
(a superuser, whom row-level security skips), both with the default tenant set.

    python -m bench.tenancy_migration.search_plans [--products N] [--runs N] [--out PATH]

PostgreSQL evaluates the policy's qual before any of the query's quals that are not
LEAKPROOF, and a qual that must wait for it cannot be an index condition
(restriction_is_securely_promotable): `tsvector @@ tsquery` (ts_match_vq) is not leakproof, so
for the application role the GIN index goes unused. The search sends a confined role other
SQL for those paths (candidates through search_terms, docs/decisions/0046). Each path is
EXPLAIN ANALYZEd `--runs` times per case on one connection each, interleaved: the owner with
the owner's SQL; the application role with that same SQL (what it ran before 0046); the
application role with the SQL it is sent now. The table gives the median and range of the
execution times, the buffers and whether the plan scanned the GIN index, searched
search_terms by lexeme, or scanned products sequentially.
"""

from __future__ import annotations

import argparse
import re
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


# Each path's query for an unconfined (False) or confined (True) role.
PATHS: dict[str, Callable[[bool], Query]] = {
    "one word by relevance (term index walk)": lambda confined: build_terms_sql(
        params("lamp", "relevance"), None, WALK_WINDOW
    ),
    "two words by relevance, exact": lambda confined: build_search_sql(
        params("walnut stool", "relevance"), None, confined=confined
    ),
    "broad two words, match probe": lambda confined: build_broad_probe_sql(
        params("oak lamp", "relevance"), confined=confined
    ),
    "broad two words, quality window": lambda confined: build_quality_window_sql(
        params("oak lamp", "relevance"), None, QUALITY_WINDOW
    ),
    "rare word by price, exact": lambda confined: build_search_sql(
        params("kilim", "price_asc"), None, confined=confined
    ),
    "one word or another by relevance, exact": lambda confined: build_search_sql(
        params("kilim or stool", "relevance"), None, confined=confined
    ),
    "phrase and exclusion by newest, exact": lambda confined: build_search_sql(
        params('"walnut stool" -oak', "newest"), None, confined=confined
    ),
    "common word by price, window walk": lambda confined: build_window_sql(
        params("lamp", "price_asc"), None, WALK_WINDOW
    ),
    "category by popularity, price range": lambda confined: build_search_sql(
        params(None, "popular", category="lamps", min_price=2000, max_price=9000),
        None,
        confined=confined,
    ),
}


@dataclass(frozen=True, slots=True)
class Measured:
    times: list[float]
    buffers: int
    plan: str

    def cells(self) -> str:
        """`median (min–max) | buffers | what the plan read` for one case."""
        median = statistics.median(self.times)
        reads = [
            label
            for label, found in (
                ("GIN", "products_search_idx" in self.plan),
                ("terms", "search_terms_tenant_pkey" in self.plan),
                ("seq scan", "Seq Scan on products" in self.plan),
            )
            if found
        ]
        return (
            f"{median:.2f} ({min(self.times):.2f}–{max(self.times):.2f}) | {self.buffers:,} "
            f"| {', '.join(reads) or '–'}"
        )


def explain(conn: psycopg.Connection[Any], query: Query) -> tuple[float, int, str]:
    """One run: (ms, shared buffers of the top node, plan text)."""
    sql, args = query
    with conn.transaction():
        conn.execute(SET_TENANT_SQL, [str(DEFAULT_TENANT_ID)])
        rows = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + sql, args).fetchall()
    text = "\n".join(str(row[0]) for row in rows)
    match = re.search(r"Execution Time: ([\d.]+) ms", text)
    top = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", text)
    buffers = int(top[1]) + int(top[2] or 0) if top else 0
    return float(match[1]) if match else float("nan"), buffers, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15, help="runs per path and case")
    parser.add_argument("--out", type=Path, default=Path("bench/tenancy_migration/SEARCH.md"))
    parser.add_argument("--plans", type=Path, default=None, help="also write every plan here")
    args = parser.parse_args()
    with admin_url() as admin:
        url = seeded_catalog(admin, f"edgemart_bench_search_{args.products}", args.products)
        role = f"edgemart_bench_app_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE edgemart_app".encode())
            conn.execute("VACUUM ANALYZE")  # as autovacuum leaves a settled catalog
        try:
            rows, plans = measure(url, make_conninfo(url, user=role), args.runs)
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
        f"{args.runs} runs of `EXPLAIN (ANALYZE, BUFFERS)` per path and case, interleaved: "
        "median (min–max) execution ms, the top node's shared buffers, and what the plan read "
        "(GIN: products_search_idx; terms: search_terms by lexeme; seq scan: of products). "
        "*app, before*: the application role sent the owner's SQL, as before decision 0046; "
        "*app, now*: the SQL a confined role is sent.",
        "",
        "| path | owner ms | owner buffers | owner reads "
        "| app before ms | app before buffers | app before reads "
        "| app now ms | app now buffers | app now reads |",
        "|---|---:|---:|:-:|---:|---:|:-:|---:|---:|:-:|",
        *rows,
    ]
    publish(args.out, lines)
    if args.plans:
        args.plans.write_text(plans, encoding="utf-8")


def measure(owner_url: str, app_url: str, runs: int) -> tuple[list[str], str]:
    rows: list[str] = []
    plans: list[str] = []
    with psycopg.connect(owner_url) as owner, psycopg.connect(app_url) as app:
        cases = {
            "owner": (owner, False),
            "app, before": (app, False),
            "app, now": (app, True),
        }
        for name, build in PATHS.items():
            results: dict[str, list[tuple[float, int, str]]] = {case: [] for case in cases}
            for _ in range(runs):
                for case, (conn, confined) in cases.items():
                    results[case].append(explain(conn, build(confined)))
            measured = {
                case: Measured([r[0] for r in runs_], runs_[-1][1], runs_[-1][2])
                for case, runs_ in results.items()
            }
            rows.append(f"| {name} | " + " | ".join(m.cells() for m in measured.values()) + " |")
            plans.append(
                f"## {name}\n\n"
                + "\n\n".join(f"### {case}\n\n{m.plan}" for case, m in measured.items())
                + "\n"
            )
    return rows, "\n".join(plans)


if __name__ == "__main__":
    main()

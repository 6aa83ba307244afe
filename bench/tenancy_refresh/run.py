"""refresh_views with many tenants: the same number of products held by one tenant, or spread
over many small ones, each catalog in a database of its own; the job's whole run (every
tenant's home lists and snapshot, the counter flushes) timed in alternating rounds.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python -m bench.tenancy_refresh.run --products 100000 --tenants 1,100 --rounds 5

Writes bench/tenancy_refresh/RESULTS.md (command, machine, date, medians and ranges).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from uuid import UUID

import psycopg

from bench.database import admin_url, fresh_database
from bench.report import database_command, provenance, publish
from edgemart.services import Services
from edgemart.settings import Settings
from edgemart.tenancy import DEFAULT_TENANT_ID
from functions.refresh_views.app import refresh_views
from gateway.democatalog import seed_catalog


def seeded(admin: str, tenants: int, products: int) -> str:
    """A database whose `products` are spread evenly over `tenants` (the default and
    `tenants - 1` created ones)."""
    url = fresh_database(admin, f"edgemart_bench_refresh_{tenants}")
    ids = [DEFAULT_TENANT_ID]
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(1, tenants):
            row = conn.execute(
                "SELECT (create_tenant(%s, %s, %s, NULL, 'bench', NULL) ->> 'id')::uuid",
                [f"bench-{n}", f"Bench {n}", [f"bench-{n}.test"]],
            ).fetchone()
            assert row is not None
            ids.append(UUID(str(row[0])))
    each = products // tenants
    for seed, tenant in enumerate(ids, start=1):  # ids are drawn from the seed: one each
        seed_catalog(
            url, products=each, seed=seed, stores=max(1, each // 100), buyers=1, tenant=tenant
        )
    return url


async def one_run(services: Services) -> float:
    started = time.perf_counter()
    report = await refresh_views(services, {})
    took = (time.perf_counter() - started) * 1000
    if report["status"] != "refreshed":
        raise RuntimeError(f"refresh_views: {report}")
    return took


async def measure(urls: dict[int, str], rounds: int) -> dict[int, list[float]]:
    services = {n: Services.from_settings(Settings.from_env({"DATABASE_URL": u}))
                for n, u in urls.items()}  # fmt: skip
    timings: dict[int, list[float]] = {n: [] for n in urls}
    try:
        for n in urls:  # warm: pools open, plans cached
            await one_run(services[n])
        for _ in range(rounds):
            for n in urls:
                timings[n].append(await one_run(services[n]))
    finally:
        for s in services.values():
            await s.aclose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--tenants", default="1,100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/tenancy_refresh/RESULTS.md"))
    args = parser.parse_args()
    counts = [int(n) for n in args.tenants.split(",")]
    with admin_url() as admin:
        urls = {n: seeded(admin, n, args.products) for n in counts}
        timings = asyncio.run(measure(urls, args.rounds))
    base = statistics.median(timings[counts[0]])
    lines = [
        "| tenants | products each | refresh_views run, median ms | range | vs one tenant |",
        "|---:|---:|---:|---|---:|",
    ]
    for n in counts:
        runs = timings[n]
        median = statistics.median(runs)
        lines.append(
            f"| {n} | {args.products // n:,} | {median:.0f} | {min(runs):.0f}–{max(runs):.0f} "
            f"| {median / base:.2f}× |"
        )
    header = [
        "# refresh_views with many tenants",
        "",
        *provenance(database_command("bench.tenancy_refresh.run"), setup="PostgreSQL 15 local"),
        "",
        f"{args.products:,} products in each database, held by one tenant or spread evenly; "
        f"the job's whole run (home lists and snapshot of every tenant, counter flushes), "
        f"{args.rounds} alternating rounds after a warm-up run.",
        "",
    ]
    publish(args.out, [*header, *lines])


if __name__ == "__main__":
    main()

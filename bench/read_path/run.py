"""Read-path benchmark: database-path latency (no cache) of home, search and store pages at
three catalog sizes, side by side with the naive "before" queries, plus reads of the home
page while its materialized view refreshes.

    python -m bench.read_path.run [--sizes 10000,100000,1000000] [--out bench/read_path]

Uses DATABASE_URL as an admin connection to create `edgemart_bench_<size>` databases (kept
between runs; `--reseed` rebuilds them), else an embedded PostgreSQL. Each query runs the
same SQL the functions run, through one psycopg connection, one at a time; the result table
gives p50/p95/p99 in milliseconds, and a plot of p99 against catalog size is written next
to it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.database import admin_url, seeded_catalog
from bench.report import database_command, provenance
from edgemart.homepage import HOME_SQL, SNAPSHOT_SQL, STORE_SNAPSHOT_SQL
from edgemart.settings import Settings
from edgemart.tenancy import DEFAULT_TENANT
from edgemart.validation import ValidationError
from functions.search.app import SearchParams, SearchTimeoutError, search_page
from functions.store.app import STORE_SQL, store_page_sql

NAIVE_HOME = [
    # What a first version does: live aggregates and sorts on the base tables.
    b"""SELECT c.id, c.slug, c.name, count(p.id) FROM categories c LEFT JOIN products p
        ON p.category_id = c.id AND p.is_available AND p.is_approved GROUP BY c.id""",
    b"""SELECT p.*, s.slug, s.name FROM products p JOIN stores s ON s.id = p.store_id
        WHERE p.is_available AND p.is_approved ORDER BY p.sold_count DESC LIMIT 10""",
    b"""SELECT p.*, s.slug, s.name FROM products p JOIN stores s ON s.id = p.store_id
        WHERE p.is_available AND p.is_approved
        ORDER BY p.quality_score DESC NULLS LAST, p.rating DESC NULLS LAST LIMIT 10""",
    b"""SELECT p.*, s.slug, s.name FROM products p JOIN stores s ON s.id = p.store_id
        WHERE p.is_available AND p.is_approved ORDER BY p.created_at DESC LIMIT 10""",
]
NAIVE_SEARCH = b"""
SELECT p.*, s.slug, s.name FROM products p JOIN stores s ON s.id = p.store_id
WHERE p.is_available AND p.is_approved AND (p.name ILIKE %(like)s OR p.description ILIKE %(like)s)
ORDER BY p.sold_count DESC LIMIT 21
"""
SEARCH_SHAPES = {
    "search 'leather backpack' (relevance)": SearchParams(
        "leather backpack", None, None, None, "relevance", 20, None
    ),
    "search 'oak chair' (price_asc)": SearchParams(
        "oak chair", None, None, None, "price_asc", 20, None
    ),
    "search 'lamp' (newest)": SearchParams("lamp", None, None, None, "newest", 20, None),
    "search 'lamp' (relevance)": SearchParams("lamp", None, None, None, "relevance", 20, None),
    "browse category 'lamps' (popular)": SearchParams(
        None, "lamps", None, None, "popular", 20, None
    ),
}
# Hostile or degenerate searches: words in most listings (the demo descriptions repeat a few
# phrases), excluded words only (refused), filters that leave nothing, a 200-character query.
WORST_CASES = {
    "worst: '-lamp -chair -oak' (refused)": SearchParams(
        "-lamp -chair -oak", None, None, None, "relevance", 20, None
    ),
    "worst: 'ships packaging' (relevance)": SearchParams(
        "ships packaging", None, None, None, "relevance", 20, None
    ),
    "worst: 'ships or warranty or returns' (relevance)": SearchParams(
        "ships or warranty or returns", None, None, None, "relevance", 20, None
    ),
    "worst: 'warranty -ships' (relevance)": SearchParams(
        "warranty -ships", None, None, None, "relevance", 20, None
    ),
    "worst: 'ships packaging' (price_desc)": SearchParams(
        "ships packaging", None, None, None, "price_desc", 20, None
    ),
    "worst: 'lamp', min_price 10^9 (newest)": SearchParams(
        "lamp", None, 1_000_000_000, None, "newest", 20, None
    ),
    "worst: 200 characters of rare words (relevance)": SearchParams(
        " ".join(f"zq{index:03d}x" for index in range(28)), None, None, None, "relevance", 20, None
    ),
}
SEARCH_TIMEOUT_MS = Settings().search_statement_timeout_ms


def catalog(admin: str, size: int, reseed: bool) -> str:
    return seeded_catalog(admin, f"edgemart_bench_{size}", size, reseed=reseed)


async def timings(run: Callable[[], Awaitable[Any]], *, iterations: int) -> list[float]:
    for _ in range(min(5, iterations)):
        await run()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(url: str, size: int) -> dict[str, list[float]]:
    fast = 300 if size <= 100_000 else 200
    slow = 30 if size <= 100_000 else 8
    results: dict[str, list[float]] = {}
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:

        async def fetch(sql: bytes, args: Any = None) -> Any:
            return await (await conn.execute(sql, args)).fetchall()

        await conn.execute(STORE_SNAPSHOT_SQL)  # what refresh_views leaves for the function
        results["home"] = await timings(lambda: fetch(SNAPSHOT_SQL), iterations=fast)
        results["home, rendered live (before the first refresh)"] = await timings(
            lambda: fetch(HOME_SQL.encode()), iterations=fast
        )

        async def naive_home() -> None:
            for sql in NAIVE_HOME:
                await fetch(sql)

        results["home, naive (live aggregates)"] = await timings(naive_home, iterations=slow)
        for label, params in SEARCH_SHAPES.items():
            results[label] = await timings(
                lambda params=params: bounded_search(conn, params),  # type: ignore[misc]
                iterations=fast if "relevance" not in label or "leather" in label else slow * 3,
            )
        for label, params in WORST_CASES.items():
            results[label] = await timings(
                lambda params=params: bounded_search(conn, params),  # type: ignore[misc]
                iterations=slow * 5,
            )
        results["search 'oak chair', naive (ILIKE)"] = await timings(
            lambda: fetch(NAIVE_SEARCH, {"like": "%oak chair%"}), iterations=slow
        )
        store = (await fetch(b"SELECT id, slug FROM stores ORDER BY slug LIMIT 1"))[0]

        async def store_page() -> None:
            await fetch(STORE_SQL, [store["slug"]])
            await fetch(store_page_sql(False, False), [store["id"], 25])

        results["store page"] = await timings(store_page, iterations=fast)
    return results


async def bounded_search(conn: Any, params: SearchParams) -> None:
    """What the search function runs for a page (its refusals and timeouts included)."""
    try:
        await search_page(conn, params, None, timeout_ms=SEARCH_TIMEOUT_MS, tenant=DEFAULT_TENANT)
    except (ValidationError, SearchTimeoutError):
        pass


async def home_during_refresh(url: str) -> tuple[list[float], float]:
    """Home query latencies while the default tenant's home lists are rebuilt (they were
    materialized views refreshed CONCURRENTLY before tenancy, docs/decisions/0040)."""
    refresher = await psycopg.AsyncConnection.connect(url, autocommit=True)
    reader = await psycopg.AsyncConnection.connect(url, autocommit=True)
    samples: list[float] = []
    try:

        async def refresh() -> float:
            started = time.perf_counter()
            async with refresher.transaction():
                await refresher.execute("SELECT refresh_home_lists(%s)", [DEFAULT_TENANT.id])
                await refresher.execute(STORE_SNAPSHOT_SQL)
            return time.perf_counter() - started

        task = asyncio.create_task(refresh())
        while not task.done():
            started = time.perf_counter()
            await (await reader.execute(SNAPSHOT_SQL)).fetchall()
            samples.append((time.perf_counter() - started) * 1000)
        return samples, await task
    finally:
        await refresher.close()
        await reader.close()


def plot(results: dict[int, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    figure, axis = plt.subplots(figsize=(8, 5))
    for label in results[sizes[0]]:
        axis.plot(
            sizes,
            [percentile(results[s][label], 0.99) for s in sizes],
            marker="o",
            label=label,
            linestyle="--" if "naive" in label else "-",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("products in the catalog")
    axis.set_ylabel("p99 latency, ms (database path)")
    axis.set_title("edgemart read path vs naive queries")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report(
    results: dict[int, dict[str, list[float]]],
    refresh: tuple[list[float], float] | None,
    command: str,
) -> str:
    sizes = sorted(results)
    lines = [
        "# Read-path benchmark",
        "",
        *provenance(f"{command}"),
        "",
        "Database path (no cache): the functions' own SQL over one connection, one query at a "
        "time. Milliseconds, p50 / p95 / p99. Searches run as the function runs them "
        f"(`search_page`: refusal check, a {SEARCH_TIMEOUT_MS} ms statement timeout).",
        "",
        "| query | " + " | ".join(f"{size:,} products" for size in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for label in results[sizes[0]]:
        cells = []
        for size in sizes:
            samples = results[size][label]
            cells.append(
                f"{percentile(samples, 0.5):.1f} / {percentile(samples, 0.95):.1f} / "
                f"{percentile(samples, 0.99):.1f}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    largest = results[sizes[-1]]
    home, naive_home = largest["home"], largest["home, naive (live aggregates)"]
    search = largest["search 'oak chair' (price_asc)"]
    naive_search = largest["search 'oak chair', naive (ILIKE)"]
    home_gain = statistics.median(naive_home) / statistics.median(home)
    search_gain = statistics.median(naive_search) / statistics.median(search)
    lines += [
        "",
        f"At {sizes[-1]:,} products: home is {home_gain:.0f}× faster than the naive home "
        f"(p50), 'oak chair' search {search_gain:.0f}× faster than ILIKE.",
    ]
    if refresh is not None:
        samples, seconds = refresh
        lines += [
            "",
            f"Home read during a {seconds:.1f} s `REFRESH ... CONCURRENTLY` of both views at "
            f"{sizes[-1]:,} products: {len(samples)} reads, p50 {percentile(samples, 0.5):.1f} ms, "
            f"max {max(samples):.1f} ms — readers are never blocked.",
        ]
    lines += ["", "![p99 latency against catalog size](latency.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[int, dict[str, list[float]]] = {}
    refresh = None
    with admin_url() as admin:
        for size in sizes:
            url = catalog(admin, size, args.reseed)
            results[size] = asyncio.run(measure(url, size))
            print(f"measured {size:,}", flush=True)
            if size == max(sizes):
                refresh = asyncio.run(home_during_refresh(url))
    text = report(results, refresh, database_command("bench.read_path.run"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text(text)
    plot(results, args.out / "latency.png")
    print(text)


if __name__ == "__main__":
    main()

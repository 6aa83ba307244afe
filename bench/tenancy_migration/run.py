"""Migrating a populated, live database to tenancy (migrations 0023/0024, decision 0040):
purchases run continuously while `migrate` brings a 0022 database to head.

    python -m bench.tenancy_migration.run [--products N] [--clients C] [--before S] [--after S]
                                          [--out bench/tenancy_migration/RESULTS.md]

Uses DATABASE_URL as admin (else an embedded PostgreSQL). The database at schema 0022 is built
once and kept as a template (`edgemart_bench_tm_base_<N>`): the migrations up to 0022 and the
SQL definitions as they were at BASE_COMMIT (read from git), then a catalog seeded in SQL with
generate_series (N products over 1,000 stores and 8 categories, 1,000 funded buyers, N/10 past
orders with their payouts). Each run clones it, then:

1. `--clients` connections buy continuously, each its own buyer, a random product of the 10,000
   first, through purchase() with the signature the application had at 0022 (after the
   migration that signature is a wrapper that buys in current_tenant_id(), for processes
   deployed before it);
2. after `--before` seconds, `apply_migrations` runs to head (timed), purchases going on;
3. purchases go on `--after` seconds more.

Reported: purchase latency p50/p99/max before, during and after; the longest lock wait a
purchase was seen in (pg_stat_activity sampled every 5 ms: a purchase backend waiting on a
`Lock`); purchases that failed (any error); the migration's duration and each step's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.database import admin_url
from bench.report import database_command, provenance, publish
from edgemart.migrate import apply_migrations, load_migrations

BASE_COMMIT = "18df456"  # schema 0022 and its SQL definitions
SQL_PATH = "layers/edgemart/edgemart/sql"
HOT_PRODUCTS = 10_000
BUYERS = 1_000
PURCHASE_SQL = (
    "SELECT status FROM purchase(%s, %s, 'fp', %s, 1, NULL, 1000, 'bench', "
    "interval '1 day', interval '5 s', false, 'USD')"
)

SEED_SQL = """
SET synchronous_commit = off;
INSERT INTO categories (slug, name)
SELECT 'category-' || n, 'Category ' || n FROM generate_series(1, 8) n;
INSERT INTO stores (slug, name, owner_sub)
SELECT 'store-' || n, 'Store ' || n, 'seller-' || n FROM generate_series(1, 1000) n;
INSERT INTO products (store_id, category_id, name, description, price_cents, stock, sold_count,
                      quality_score, created_at)
SELECT s.id, c.id,
       (ARRAY['oak', 'walnut', 'linen', 'brass', 'rattan', 'steel'])[1 + n % 6] || ' ' ||
       (ARRAY['lamp', 'chair', 'desk', 'rug', 'stool', 'shelf', 'kettle'])[1 + n % 7] || ' ' ||
       n,
       'a well made piece, number ' || n,
       100 + n % 9900, 1000000, n % 500, (n % 100)::real,
       now() - (n || ' seconds')::interval
FROM generate_series(1, {products}) n
JOIN (SELECT id, row_number() OVER (ORDER BY slug) - 1 AS k FROM stores) s ON s.k = n % 1000
JOIN (SELECT id, row_number() OVER (ORDER BY slug) - 1 AS k FROM categories) c ON c.k = n % 8;
INSERT INTO wallets (user_sub, balance_cents)
SELECT 'buyer-' || n, 1000000000000 FROM generate_series(1, 1000) n;
WITH picked AS (
    SELECT id, store_id, price_cents, row_number() OVER () AS n
    FROM (SELECT id, store_id, price_cents FROM products ORDER BY created_at LIMIT {orders}) p
), placed AS (
    INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, total_cents,
                        status)
    SELECT 'buyer-' || (1 + n % 1000), id, store_id, 1, price_cents, price_cents, 'completed'
    FROM picked
    RETURNING id, store_id, total_cents
)
INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents)
SELECT id, store_id, total_cents - total_cents / 10, total_cents / 10 FROM placed;
"""


def base_definitions(folder: Path) -> Path:
    """The SQL definition files as they were at BASE_COMMIT, written into `folder`."""
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{BASE_COMMIT}:{SQL_PATH}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{BASE_COMMIT}:{SQL_PATH}/{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def base_database(admin: str, products: int) -> str:
    """The template at schema 0022 with the seeded catalog, built once; its name."""
    name = f"edgemart_bench_tm_base_{products}"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return name
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = make_conninfo(admin, dbname=name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        old = [m for m in load_migrations() if m.version <= 22]
        apply_migrations(url, old, base_definitions(Path(folder)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_SQL.format(products=int(products), orders=int(products) // 10).encode())
        conn.execute("VACUUM ANALYZE")
    print(f"built {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return name


@dataclass
class Samples:
    """Purchase latencies as (finished at, seconds), failures, and lock waits seen."""

    latencies: list[tuple[float, float]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    lock_waits: dict[tuple[int, Any], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def buyer(url: str, number: int, products: list[str], stop: threading.Event, out: Samples) -> None:
    rng = random.Random(number)
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                conn.execute(
                    PURCHASE_SQL, [f"buyer-{number}", uuid.uuid4().hex, rng.choice(products)]
                ).fetchone()
            except psycopg.Error as exc:
                with out.lock:
                    out.failures.append((time.perf_counter(), type(exc).__name__))
                continue
            finished = time.perf_counter()
            with out.lock:
                out.latencies.append((finished, finished - started))


def lock_watcher(url: str, stop: threading.Event, out: Samples) -> None:
    """Every 5 ms: purchase backends waiting on a heavyweight lock other than an advisory one
    (buyers of one product queue on one, migration or not), and since when (the longest wait
    of each (pid, statement start) is kept)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT pid, query_start, extract(epoch FROM clock_timestamp() - state_change) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'SELECT status FROM purchase(%' AND wait_event_type = 'Lock' "
                "AND wait_event <> 'advisory'"  # not the queue of buyers of one product
            ).fetchall()
            for pid, query_start, waited in rows:
                key = (int(pid), query_start)
                out.lock_waits[key] = max(out.lock_waits.get(key, 0.0), float(waited))
            time.sleep(0.005)


def percentiles(values: list[float]) -> str:
    if not values:
        return "| 0 | - | - | - |"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {len(values):,} | {statistics.median(ordered) * 1000:.2f} | {p99 * 1000:.2f} "
        f"| {ordered[-1] * 1000:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--before", type=float, default=20.0)
    parser.add_argument("--after", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/tenancy_migration/RESULTS.md"))
    args = parser.parse_args()
    with admin_url() as admin:
        base = base_database(admin, args.products)
        name = f"edgemart_bench_tm_run_{args.products}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base}"'.encode())
        url = make_conninfo(admin, dbname=name)
        lines = run(url, args)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    publish(args.out, lines)


def run(url: str, args: argparse.Namespace) -> list[str]:
    with psycopg.connect(url) as conn:
        products = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM products ORDER BY created_at DESC LIMIT %s", [HOT_PRODUCTS]
            )
        ]
    samples, stop = Samples(), threading.Event()
    threads = [
        threading.Thread(target=buyer, args=(url, n, products, stop, samples), daemon=True)
        for n in range(1, args.clients + 1)
    ]
    threads.append(threading.Thread(target=lock_watcher, args=(url, stop, samples), daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(args.before)
    migration_started = time.perf_counter()
    migrated = apply_migrations(url)
    migration_ended = time.perf_counter()
    time.sleep(args.after)
    stop.set()
    for thread in threads:
        thread.join()
    return report(url, args, samples, migration_started, migration_ended, migrated)


def report(
    url: str,
    args: argparse.Namespace,
    samples: Samples,
    started: float,
    ended: float,
    migrated: Any,
) -> list[str]:
    def window(low: float, high: float) -> list[float]:
        return [took for at, took in samples.latencies if low <= at < high]

    # A purchase that finished after the migration started but had begun before it counts as
    # during: it is the one that may have waited on it.
    before = window(0.0, started)
    during = window(started, ended)
    after = window(ended, float("inf"))
    longest_wait = max(samples.lock_waits.values(), default=0.0)
    with psycopg.connect(url) as conn:
        sold = conn.execute("SELECT count(*) FROM orders WHERE request_id = 'bench'").fetchone()
        tenants = conn.execute("SELECT count(DISTINCT tenant_id) FROM products").fetchone()
    kinds = ", ".join(sorted({kind for _, kind in samples.failures}))
    failed = f"{len(samples.failures)} ({kinds})" if kinds else "0"
    return [
        "# Tenancy migration (0023/0024) under continuous purchases",
        "",
        *provenance(
            database_command("bench.tenancy_migration.run"),
            setup=(
                f"{args.products:,} products, {args.products // 10:,} past orders, "
                f"{args.clients} purchase clients; PostgreSQL on the same 2 cores"
            ),
        ),
        "",
        f"Migration to head: **{ended - started:.1f} s** "
        f"({', '.join(f'{m.version:04d}' for m in migrated.migrations)} and "
        f"{len(migrated.definitions)} definitions).  ",
        f"Longest lock wait a purchase was seen in: **{longest_wait * 1000:.0f} ms** "
        f"({len(samples.lock_waits)} purchases seen waiting on a lock; sampled every 5 ms).  ",
        f"Purchases that failed: {failed}; "
        f"orders made: {sold[0] if sold else 0:,}; "
        f"tenants holding the catalog after: {tenants[0] if tenants else 0}.",
        "",
        "| phase | purchases | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| before ({args.before:.0f} s) {percentiles(before)}",
        f"| during the migration {percentiles(during)}",
        f"| after ({args.after:.0f} s) {percentiles(after)}",
    ]


if __name__ == "__main__":
    main()

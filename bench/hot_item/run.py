"""One hot product: purchases per second in direct mode vs queued mode (worker batches of 10
and 50), against the real database.

    python -m bench.hot_item.run [--seconds S] [--orders N] [--out bench/hot_item/RESULTS.md]

Uses DATABASE_URL as admin to create `edgemart_bench_hot_item` (else an embedded PostgreSQL).
- direct: 8 and 32 clients, each on its own connection and buyer, call `purchase()` on the
  same product (exactly the SQL the purchase function runs) for S seconds;
- queued: N orders from distinct buyers (see BUYERS) are stored `queued` (as
  `POST /purchases` leaves them), then the real worker
  (`functions.order_worker.app.order_worker`) is called on prepared SQS-shaped batches, so SQS
  itself is not what is measured; by one worker, and by two at once (Lambda runs several SQS
  batches concurrently; apply_queued_orders() lets two batches of one product overlap everywhere
  but the stock UPDATE and the commit).
Oversold units are counted after every run (must be 0): stock taken must equal units sold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench.database import admin_url, fresh_database, query
from bench.purchase.run import PURCHASE_SQL
from bench.report import provenance, publish
from edgemart.services import Services
from edgemart.settings import Settings
from functions.order_worker.app import order_worker
from gateway.democatalog import seed_catalog

DATABASE = "edgemart_bench_hot_item"
STOCK = 10_000_000
# Queued orders come from this many buyers, one order each per run of 5,000: a hot item's
# buyers are many people buying once, not a few buying all day. (With 64 buyers, two batches
# share most buyers and wait on each other's wallet locks, as any two purchases by one buyer
# must; direct mode's clients are one buyer each, so they never wait on a wallet.)
BUYERS = 5_000


def prepare(admin: str) -> tuple[str, str]:
    url = fresh_database(admin, DATABASE)
    seed_catalog(url, products=1_000, seed=3, buyers=64)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) "
            "SELECT 'buyer-' || n, 1000000000000 FROM generate_series(1, %s) n "
            "ON CONFLICT (tenant_id, user_sub) "
            "DO UPDATE SET balance_cents = excluded.balance_cents",
            [BUYERS],
        )
        row = conn.execute(
            "UPDATE products SET stock = %s, is_available = true WHERE id = "
            "(SELECT id FROM products ORDER BY id LIMIT 1) RETURNING id::text",
            [STOCK],
        ).fetchone()
    assert row is not None
    return url, row[0]


def oversold(url: str, product: str) -> int:
    """Units sold beyond the stock taken (0 unless the books are wrong)."""
    rows = query(
        url,
        "SELECT %s - p.stock - coalesce((SELECT sum(quantity) FROM orders o "
        "WHERE o.product_id = p.id AND o.status = 'completed'), 0) FROM products p "
        "WHERE p.id = %s",
        [STOCK, product],
    )
    return abs(int(rows[0][0])) if rows else -1


async def direct(url: str, product: str, clients: int, seconds: float) -> float:
    connections = [
        await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)
    ]
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal done
        conn = connections[index]
        while time.perf_counter() < deadline:
            row = await (
                await conn.execute(PURCHASE_SQL, [f"buyer-{index + 1}", uuid.uuid4().hex, product])
            ).fetchone()
            if not row or row[0] != 201:
                raise RuntimeError(f"purchase returned {row}")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    for conn in connections:
        await conn.close()
    return done / elapsed


def queue_orders(url: str, product: str, count: int) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key) "
            "SELECT 'buyer-' || (1 + n %% %s), p.id, p.store_id, 1, p.price_cents, "
            "p.price_cents, 'queued', 'hot-' || n "
            "FROM products p, generate_series(1, %s) n WHERE p.id = %s "
            "ORDER BY n RETURNING id::text",
            [BUYERS, count, product],
        ).fetchall()
    return [row[0] for row in rows]


def sqs_event(order_ids: list[str], product: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": order_id,
                "receiptHandle": order_id,
                "body": json.dumps({"order_id": order_id, "product_id": product}),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:purchases",
                "awsRegion": "us-east-1",
            }
            for order_id in order_ids
        ]
    }


async def queued(url: str, product: str, batch_size: int, orders: int, workers: int) -> float:
    order_ids = queue_orders(url, product, orders)
    events = [
        sqs_event(order_ids[i : i + batch_size], product)
        for i in range(0, len(order_ids), batch_size)
    ]
    services = Services.from_settings(Settings(database_url=url))
    pending = events[1:]

    async def worker() -> None:
        while pending:
            response = await order_worker(services, pending.pop(0))
            if response["batchItemFailures"]:
                raise RuntimeError(f"worker reported failures: {response}")

    try:
        await order_worker(services, events[0])  # warm the pool
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - started
    finally:
        await services.aclose()
    return (len(order_ids) - len(events[0]["Records"])) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--orders", type=int, default=5_000, help="per queued run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()
    logging_off()

    with admin_url() as admin:
        url, product = prepare(admin)
        results: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # contenders alternate, so machine noise hits all
            for clients in (8, 32):
                rate = asyncio.run(direct(url, product, clients, args.seconds))
                results.setdefault(f"direct, {clients} clients", []).append(rate)
            for batch, workers in ((10, 1), (50, 1), (50, 2)):
                rate = asyncio.run(queued(url, product, batch, args.orders, workers))
                name = f"queued, worker batch {batch}"
                name += f", {workers} workers at once" if workers > 1 else ""
                results.setdefault(name, []).append(rate)
        over = oversold(url, product)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    best_direct = max(v for k, v in medians.items() if k.startswith("direct"))
    lines = [
        "# One hot product: direct vs queued purchases",
        "",
        *provenance(
            f"python -m bench.hot_item.run {' '.join(sys.argv[1:])}",
            setup="PostgreSQL on the same machine",
        ),
        "",
        "| mode | purchases/s (median) | runs | vs best direct |",
        "|---|---:|---|---:|",
        *(
            f"| {name} | {medians[name]:,.0f} | "
            + ", ".join(f"{r:,.0f}" for r in rates)
            + f" | {medians[name] / best_direct:.1f}× |"
            for name, rates in results.items()
        ),
        "",
        f"Oversold units after all runs: **{over}**. Target: queued ≥ 10× direct.",
        "",
        "Direct: every purchase takes the product's row lock for its stock UPDATE and holds it "
        "to COMMIT, so purchases of one product commit one at a time whatever the client "
        "count. Queued: the worker applies a whole batch inside one transaction "
        "(`apply_queued_orders`), taking the lock once per batch instead of once per "
        "purchase, and two workers overlap everywhere but that UPDATE and their commits. "
        f"Queued orders come from {BUYERS:,} buyers, one order each per run; each direct "
        "client is its own buyer.",
    ]
    publish(args.out, lines)


def logging_off() -> None:
    from edgemart.logging import logger

    logger.setLevel("WARNING")


if __name__ == "__main__":
    main()

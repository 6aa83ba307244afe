"""Purchase throughput: our one-round-trip `purchase()` vs the seeds' SELECT ... FOR UPDATE
then UPDATE pattern vs pgbench's bare single-row UPDATE (the ceiling), side by side.

    python -m bench.purchase.run [--seconds S] [--rounds N] [--out bench/purchase/RESULTS.md]

Uses DATABASE_URL as admin to create `edgemart_bench_purchase` (else an embedded PostgreSQL).
Scenarios: (a) every client buys the same hot product, (b) purchases spread over 10,000
products; at 8 and 32 concurrent clients, each client its own connection and its own buyer.
Our path runs exactly the SQL the purchase function runs. After every run: oversold units
(stock below zero is impossible by CHECK; counted anyway as sold - initial stock) must be 0.

On the hot product, `purchase()` is also driven by pgbench itself (no Python client), beside
the ceiling: the gap between the two is the database's, not the driver's. Every transaction
pgbench counts there must have made an order, or the run fails.

Every run starts from vacuumed `products` and `wallets`, as pgbench's own runs do: every
purchase leaves a dead version of its product and wallet rows, and with autovacuum off (as on
the CI machine's server) each run would otherwise inherit the previous runs' dead versions,
which a path that looks the hot row up more often than pgbench's one UPDATE pays for more.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.database import admin_url, fresh_database, query
from bench.report import database_command, provenance
from edgemart.tenancy import DEFAULT_TENANT_ID
from gateway.democatalog import seed_catalog


def purchase_call(buyer: str, key: str, product: str, request_id: str) -> str:
    """The purchase() call both drivers make, given SQL for the arguments that vary."""
    return (
        f"SELECT status FROM purchase('{DEFAULT_TENANT_ID}', {buyer}, {key}, 'fp', {product}, "
        "1, NULL, 1000, "
        f"{request_id}, interval '1 day', interval '5 s', false, 'USD')"
    )


PURCHASE_SQL = purchase_call("%s", "%s", "%s", "'bench'")
INITIAL_STOCK = 10_000_000


def prepare(admin: str) -> tuple[str, list[str]]:
    return prepare_database(admin, "edgemart_bench_purchase")


def prepare_database(admin: str, name: str) -> tuple[str, list[str]]:
    """`name` created afresh, migrated by this checkout and seeded: its URL and product ids."""
    url = fresh_database(admin, name)
    seed_catalog(url, products=10_000, seed=3, buyers=64)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE products SET stock = %s, is_available = true", [INITIAL_STOCK])
        conn.execute("UPDATE wallets SET balance_cents = 1000000000000")
        ids = [str(row[0]) for row in conn.execute("SELECT id FROM products ORDER BY id")]
    return url, ids


async def ours(conn: psycopg.AsyncConnection[Any], buyer: str, product: str) -> None:
    row = await (await conn.execute(PURCHASE_SQL, [buyer, uuid.uuid4().hex, product])).fetchone()
    if not row or row[0] != 201:
        raise RuntimeError(f"purchase returned {row}")


async def for_update(conn: psycopg.AsyncConnection[Any], buyer: str, product: str) -> None:
    """The seeds' pattern: read-lock the row, check, then write, over several round trips."""
    async with conn.transaction():
        price, store, stock = (  # type: ignore[misc]
            await (
                await conn.execute(
                    "SELECT price_cents, store_id, stock FROM products WHERE id = %s FOR UPDATE",
                    [product],
                )
            ).fetchone()
        )
        if stock < 1:
            raise RuntimeError("out of stock")
        await conn.execute(
            "UPDATE products SET stock = stock - 1, sold_count = sold_count + 1 WHERE id = %s",
            [product],
        )
        await conn.execute(
            "UPDATE wallets SET balance_cents = balance_cents - %s WHERE user_sub = %s",
            [price, buyer],
        )
        order = await (
            await conn.execute(
                "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
                "total_cents, status) VALUES (%s, %s, %s, 1, %s, %s, 'completed') RETURNING id",
                [buyer, product, store, price, price],
            )
        ).fetchone()
        await conn.execute(
            "INSERT INTO payouts (order_id, store_id, amount_cents, fee_cents) "
            "VALUES (%s, %s, %s, %s)",
            [
                order[0],
                store,
                price - price // 10,  # type: ignore[index]
                price // 10,
            ],
        )


async def drive(
    url: str,
    clients: int,
    seconds: float,
    products: list[str],
    step: Callable[[psycopg.AsyncConnection[Any], str, str], Awaitable[None]],
) -> tuple[float, list[float], float]:
    """Purchases per second, each one's latency in ms, and the CPU this Python client spent
    meanwhile, in cores: the database shares the machine's cores with it."""
    vacuum(url)
    connections = [
        await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)
    ]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        rng = random.Random(index)
        conn, buyer = connections[index], f"buyer-{index + 1}"
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await step(conn, buyer, products[rng.randrange(len(products))])
            latencies.append((time.perf_counter() - started) * 1000)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(index) for index in range(clients)))
    elapsed = time.perf_counter() - started
    client_cores = (time.process_time() - cpu_started) / elapsed
    for conn in connections:
        await conn.close()
    return len(latencies) / elapsed, latencies, client_cores


def vacuum(url: str) -> None:
    """Reclaim the dead row versions the previous run left (see the module docstring)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM products, wallets")


def pgbench(
    url: str, clients: int, seconds: float, statement: str, think_us: int = 0
) -> tuple[float, int]:
    """Transactions per second and transactions processed, each client running `statement`
    (prepared) back to back, or `think_us` apart; `:client_id` numbers the clients from 0."""
    vacuum(url)
    params = conninfo_to_dict(url)
    script = Path(tempfile.mkdtemp()) / "script.sql"
    pause = f"\\sleep {think_us} us\n" if think_us else ""
    script.write_text(pause + statement + "\n")
    command = [
        "pgbench",
        "-n",
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(int(seconds)),
        "-f",
        str(script),
        "-M",
        "prepared",
    ]
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
        if params.get(key):
            command += [flag, str(params[key])]
    command.append(str(params["dbname"]))
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"tps = ([\d.]+)", output)
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    if rate is None or processed is None:
        raise RuntimeError(output)
    return float(rate[1]), int(processed[1])


def ceiling(url: str, clients: int, seconds: float, product: str) -> float:
    """pgbench's bare single-row UPDATE of the product."""
    statement = f"UPDATE products SET sold_count = sold_count + 1 WHERE id = '{product}';"
    return pgbench(url, clients, seconds, statement)[0]


def ours_via_pgbench(
    url: str, clients: int, seconds: float, product: str, think_us: int = 0
) -> float:
    """`ours` with pgbench as the client: client n buys as buyer-(n+1), as `ours` does.
    pgbench does not look at the status, so the orders the run made are counted instead."""
    buyer, key = "'buyer-' || (:client_id + 1)", "gen_random_uuid()::text"
    statement = purchase_call(buyer, key, f"'{product}'", "'bench-pgbench'") + ";"
    before = orders_made_by_pgbench(url)
    rate, processed = pgbench(url, clients, seconds, statement, think_us)
    made = orders_made_by_pgbench(url) - before
    if made != processed:
        raise RuntimeError(f"pgbench ran {processed} purchases but {made} orders were made")
    return rate


def orders_made_by_pgbench(url: str) -> int:
    rows = query(url, "SELECT count(*) FROM orders WHERE request_id = 'bench-pgbench'")
    return int(rows[0][0])


def oversold(url: str) -> int:
    rows = query(
        url,
        "SELECT coalesce(sum(GREATEST(0, sold_count - %s)), 0) + "
        "(SELECT count(*) FROM products WHERE stock < 0) FROM products",
        [INITIAL_STOCK],
    )
    return int(rows[0][0]) if rows else -1


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rate_cell(rate: float, latencies: list[float]) -> str:
    """`rate (p50 / p99 ms)` for a results table."""
    return f"{rate:,.0f} ({percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f})"


def share_cell(rates: list[float], ceilings: list[float]) -> str:
    """The median of each round's rate / ceiling, with the range in brackets."""
    shares = sorted(r / c for r, c in zip(rates, ceilings, strict=True))
    return f"{statistics.median(shares):.0%} ({shares[0]:.0%}–{shares[-1]:.0%})"


@dataclass
class Cell:
    """One scenario at one client count, over paired rounds (ours, FOR UPDATE, and on the hot
    product ours via pgbench and the ceiling, back to back, so each round's ratios compare runs
    that saw the same machine)."""

    scenario: str
    clients: int
    ours: list[float] = field(default_factory=list)
    ours_latencies: list[float] = field(default_factory=list)
    ours_client_cores: list[float] = field(default_factory=list)
    for_update: list[float] = field(default_factory=list)
    for_update_latencies: list[float] = field(default_factory=list)
    ours_via_pgbench: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)

    def row(self) -> str:
        ours, fu = statistics.median(self.ours), statistics.median(self.for_update)
        vs_fu = statistics.median(o / f for o, f in zip(self.ours, self.for_update, strict=True))
        cells = [
            self.scenario,
            str(self.clients),
            rate_cell(ours, self.ours_latencies),
            f"{statistics.median(self.ours_client_cores):.2f}",
            rate_cell(fu, self.for_update_latencies),
            f"{vs_fu:.2f}×",
        ]
        if self.ceiling:
            cells += [
                f"{statistics.median(self.ceiling):,.0f}",
                share_cell(self.ours, self.ceiling),
                share_cell(self.ours_via_pgbench, self.ceiling),
            ]
        else:
            cells += ["—", "—", "—"]
        return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds per cell")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()
    if shutil.which("pgbench") is None:
        sys.exit("pgbench is not installed (Debian: postgresql-client)")
    cells: list[Cell] = []
    with admin_url() as admin:
        url, products = prepare(admin)
        hot = products[:1]
        for scenario, pool in (("hot product", hot), ("10,000 products", products)):
            for clients in (8, 32):
                cell = Cell(scenario, clients)
                for _ in range(args.rounds):
                    rate, latencies, client_cores = asyncio.run(
                        drive(url, clients, args.seconds, pool, ours)
                    )
                    cell.ours.append(rate)
                    cell.ours_latencies += latencies
                    cell.ours_client_cores.append(client_cores)
                    rate, latencies, _ = asyncio.run(
                        drive(url, clients, args.seconds, pool, for_update)
                    )
                    cell.for_update.append(rate)
                    cell.for_update_latencies += latencies
                    if pool is hot:
                        cell.ours_via_pgbench.append(
                            ours_via_pgbench(url, clients, args.seconds, hot[0])
                        )
                        cell.ceiling.append(ceiling(url, clients, args.seconds, hot[0]))
                print(cell.row(), flush=True)
                cells.append(cell)
        sold_over = oversold(url)
    lines = [
        "# Purchase benchmark",
        "",
        *provenance(
            database_command("bench.purchase.run"),
            setup="PostgreSQL on the same machine",
        ),
        "",
        "Purchases per second, median of "
        f"{args.rounds} paired rounds of {args.seconds:.0f} s (p50 / p99 ms over all rounds). "
        "*ours*: the `purchase()` function the purchase route calls, one round trip. "
        "*FOR UPDATE*: SELECT ... FOR UPDATE then UPDATE, wallet, order, payout, 6 round trips "
        "in a transaction. *ceiling*: pgbench, one prepared single-row UPDATE of the hot "
        "product per transaction. Every run starts from vacuumed `products` and `wallets`. "
        "Ratios are the median of each round's ratio (range in "
        "brackets): ours, FOR UPDATE and the ceiling run back to back in every round. "
        "*ours via pgbench*: the same `purchase()` call with pgbench as the client instead of "
        "Python (every transaction it counted made an order), run just before the ceiling. "
        f"*client CPU*: the cores the Python client itself used during *ours* (median; the "
        f"machine has {os.cpu_count()}, shared with the database), which pgbench as the client "
        "does not take.",
        "",
        "| scenario | clients | ours | client CPU | FOR UPDATE | ours / FOR UPDATE "
        "| pgbench ceiling | ours / ceiling | ours via pgbench / ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(cell.row() for cell in cells),
        "",
        f"Oversold units across every run: {sold_over}.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""`purchase()` of two versions of the code, side by side on one machine in one run.

A change to the purchase SQL is judged against the code before it, not against a results file
written on another day (these machines swing by a third between identical runs). Each version
prepares its own database with its own migrations and definitions; the rounds then alternate
between the two databases, so both see the same machine.

    # in a checkout of the old code, then in this one:
    python -m bench.purchase.compare prepare edgemart_bench_old
    python -m bench.purchase.compare prepare edgemart_bench_new
    # from either checkout (the driver is the same):
    python -m bench.purchase.compare run edgemart_bench_old edgemart_bench_new \
        [--clients 8] [--rounds 8] [--seconds 5] [--hot]

Uses DATABASE_URL as admin. `--hot`: every client buys the same product; otherwise purchases
spread over the 10,000 products `bench.purchase.run` seeds. Prints each database's median and
range, and the median of the per-round ratios (second / first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

from psycopg.conninfo import make_conninfo

from bench.database import query
from bench.purchase.run import drive, ours, prepare_database


def product_ids(url: str) -> list[str]:
    return [str(row[0]) for row in query(url, "SELECT id FROM products ORDER BY id")]


def run(admin: str, names: list[str], clients: int, rounds: int, seconds: float, hot: bool) -> None:
    urls = [make_conninfo(admin, dbname=name) for name in names]
    products = [product_ids(url)[: 1 if hot else None] for url in urls]
    rates: list[list[float]] = [[] for _ in names]
    for round_ in range(rounds):
        order = range(len(names)) if round_ % 2 == 0 else reversed(range(len(names)))
        for index in order:
            rate, _, _ = asyncio.run(drive(urls[index], clients, seconds, products[index], ours))
            rates[index].append(rate)
        print(f"round {round_ + 1}: " + ", ".join(f"{r[-1]:,.0f}" for r in rates), flush=True)
    for name, series in zip(names, rates, strict=True):
        print(
            f"{name}: median {statistics.median(series):,.0f}/s "
            f"(range {min(series):,.0f}-{max(series):,.0f})"
        )
    ratios = [second / first for first, second in zip(rates[0], rates[1], strict=True)]
    print(
        f"{names[1]} / {names[0]}: median of per-round ratios {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_command = commands.add_parser("prepare", help="a database migrated by this checkout")
    prepare_command.add_argument("name")
    run_command = commands.add_parser("run", help="alternate rounds over two databases")
    run_command.add_argument("names", nargs=2)
    run_command.add_argument("--clients", type=int, default=8)
    run_command.add_argument("--rounds", type=int, default=8)
    run_command.add_argument("--seconds", type=float, default=5.0)
    run_command.add_argument("--hot", action="store_true", help="every client buys one product")
    args = parser.parse_args()
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        parser.error("set DATABASE_URL (an admin connection to the server to compare on)")
    if args.command == "prepare":
        print(prepare_database(admin, args.name)[0])
    else:
        run(admin, args.names, args.clients, args.rounds, args.seconds, args.hot)


if __name__ == "__main__":
    main()

"""Live updates: how long a committed change takes to reach subscribed WebSockets held by
another gateway process, and what an idle subscribed socket costs the process holding it.

    python -m bench.push.run [--sockets N] [--commits N] [--rounds N]
                             [--idle-sockets N] [--out bench/push/RESULTS.md]

DATABASE_URL (as admin) gets a database of its own, `edgemart_bench_push`, migrated and seeded
with a small demo catalog once and kept between runs; REDIS_URL is the broadcast (a namespace
of the run's own). Two `edgemart serve --workers 1` processes run on them: `writer` takes the
purchases, `holder` holds every socket.

1. **Commit → message** (`--sockets`, 1,000 by default, all on `holder`, each subscribed to
   one hot product): `--commits` purchases of that product through `writer`, one every 400 ms
   (past the 250 ms coalescing window, so each is its own message). For each purchase, each
   socket's latency is from just before the purchase request was sent (the commit happens
   inside it, so this bounds commit → message from above) to the stock message's arrival at
   that socket; p50 and p99 over every (purchase, socket). `--rounds` rounds; median and
   range of the rounds' percentiles. Target p99 ≤ 100 ms. The clients run in this one
   process on the same two cores as both servers, PostgreSQL and Redis.
2. **Memory per idle socket** (`--idle-sockets`, 10,000 by default, on a fresh `holder`): its
   RSS before and after the sockets are open and each has subscribed (to one of the catalog's
   listed products, round robin) and answered; the difference divided by the sockets. Aim
   ≤ 20 KB. Bounded in time: sockets open 200 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from psycopg.conninfo import make_conninfo
from websockets.asyncio.client import ClientConnection, connect

from bench.database import query
from bench.push.rawclient import RawClient, open_raw
from bench.report import database_command, provenance, publish
from bench.serving import QUIET_SCHEDULES

DATABASE = "edgemart_bench_push"
SECRET = "bench-push-secret-of-at-least-32-bytes!"
BUYER = "bench-push-buyer"


def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def bench_database() -> str:
    admin = os.environ["DATABASE_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"'.encode())
    url = make_conninfo(admin, dbname=DATABASE)
    from edgemart.migrate import apply_migrations
    from gateway.democatalog import catalog_is_present, seed_catalog

    apply_migrations(url)
    with psycopg.connect(url) as conn:
        present = catalog_is_present(conn)
    if not present:
        seed_catalog(url, products=2_000, seed=7)
    return url


def hot_product(url: str) -> str:
    """A fresh product with stock for every purchase of the run, and a buyer who can pay."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO products (store_id, category_id, name, price_cents, stock, currency) "
            "SELECT id, 1, 'Bench hot item', 100, 1000000, 'USD' FROM stores "
            "WHERE is_active ORDER BY slug LIMIT 1 RETURNING id::text"
        ).fetchone()
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) VALUES (%s, 1000000000) "
            "ON CONFLICT (tenant_id, user_sub) DO UPDATE SET balance_cents = 1000000000",
            [BUYER],
        )
    assert row is not None
    return str(row[0])


def listed_products(url: str, count: int) -> list[str]:
    rows = query(
        url,
        "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active ORDER BY p.id LIMIT %s",
        [count],
    )
    return [row[0] for row in rows]


@contextmanager
def serve(url: str, namespace: str, log: Path) -> Iterator[tuple[str, int]]:
    """`edgemart serve` on a free port: (its base URL, its pid)."""
    port = unused_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SHARED_CACHE_NAMESPACE": namespace,
        "JWT_SECRET": SECRET,
        "RATE_LIMIT_PURCHASES": "100000000/60",
        "WS_MAX_CONNECTIONS_PER_CLIENT": "100000",
        "ACCESS_LOG_SAMPLE_RATE": "0",
        "SCHEDULE_INTERVALS": QUIET_SCHEDULES,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--no-demo", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_subscribed(
    base: str, channels: list[str], batch: int = 200
) -> list[ClientConnection]:
    ws = base.replace("http://", "ws://") + "/ws"

    async def one(channel: str) -> ClientConnection:
        client = await connect(ws, max_size=2**16, ping_interval=None)
        await client.send(json.dumps({"action": "subscribe", "channel": channel}))
        state = json.loads(await client.recv())
        assert state["type"] == "stock", state
        return client

    clients: list[ClientConnection] = []
    for start in range(0, len(channels), batch):
        clients.extend(await asyncio.gather(*(one(c) for c in channels[start : start + batch])))
    return clients


def token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": BUYER, "exp": now + 3600}, SECRET, algorithm="HS256")


Arrivals = Callable[[], list[Awaitable[float]]]
"""Armed before a purchase: one awaitable per socket, the time its next message arrives."""


def library_arrivals(clients: list[ClientConnection]) -> Arrivals:
    """Through the `websockets` library: each message received and parsed."""

    async def arrival(client: ClientConnection) -> float:
        message = json.loads(await client.recv())
        assert message["type"] == "stock", message
        return time.perf_counter()

    return lambda: [asyncio.ensure_future(arrival(client)) for client in clients]


def raw_arrivals(clients: list[RawClient]) -> Arrivals:
    """Through the minimal clients: the message's bytes reaching the socket."""
    return lambda: [client.expect() for client in clients]


async def commit_to_message(
    writer: str, arrivals: Arrivals, product: str, commits: int
) -> list[float]:
    """Latencies (ms) from each purchase request's start to each socket's message."""
    latencies: list[float] = []
    authorization = {"Authorization": f"Bearer {token()}"}
    async with httpx.AsyncClient(base_url=writer, timeout=10) as http:
        for _ in range(commits):
            waiting = arrivals()
            await asyncio.sleep(0)  # the library's readers start before the purchase
            sent = time.perf_counter()
            response = await http.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers={**authorization, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 201, response.text
            async with asyncio.timeout(30):
                times = await asyncio.gather(*waiting)
            latencies.extend((arrival - sent) * 1000 for arrival in times)
            await asyncio.sleep(0.4)
    return latencies


def summarized(latencies: list[float]) -> tuple[float, float, float]:
    return percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def close_all(clients: list[ClientConnection]) -> None:
    for start in range(0, len(clients), 500):
        await asyncio.gather(*(c.close() for c in clients[start : start + 500]))


async def measure(args: argparse.Namespace, url: str, temp: Path) -> dict[str, Any]:
    namespace = f"bench-push:{uuid.uuid4().hex[:8]}"
    product = hot_product(url)
    rounds: list[tuple[float, float, float]] = []
    raw_rounds: list[tuple[float, float, float]] = []
    with ExitStack() as stack:
        writer, _ = stack.enter_context(serve(url, namespace, temp / "writer.log"))
        holder, _ = stack.enter_context(serve(url, namespace, temp / "holder.log"))
        clients = await open_subscribed(holder, [f"product:{product}"] * args.sockets)
        await commit_to_message(writer, library_arrivals(clients), product, 3)  # warm up
        for _ in range(args.rounds):
            latencies = await commit_to_message(
                writer, library_arrivals(clients), product, args.commits
            )
            rounds.append(summarized(latencies))
        await close_all(clients)
        host, port = holder.removeprefix("http://").split(":")
        raw = [await open_raw(host, int(port), f"product:{product}") for _ in range(args.sockets)]
        for _ in range(args.rounds):
            latencies = await commit_to_message(writer, raw_arrivals(raw), product, args.commits)
            raw_rounds.append(summarized(latencies))
        for client in raw:
            if client.transport is not None:
                client.transport.close()
    products = listed_products(url, 2_000)
    with serve(url, namespace, temp / "idle.log") as (holder, pid):
        async with httpx.AsyncClient(base_url=holder) as http:
            await http.get("/health/live")
        before = rss_kib(pid)
        started = time.monotonic()
        channels = [f"product:{products[i % len(products)]}" for i in range(args.idle_sockets)]
        clients = await open_subscribed(holder, channels)
        opened_s = time.monotonic() - started
        await asyncio.sleep(2)
        after = rss_kib(pid)
        await close_all(clients)
    return {
        "rounds": rounds,
        "raw_rounds": raw_rounds,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "per_socket_kib": (after - before) / args.idle_sockets,
        "opened_s": opened_s,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    rounds = result["rounds"]
    p50s = [r[0] for r in rounds]
    p99s = [r[1] for r in rounds]
    maxes = [r[2] for r in rounds]
    raw_p50s = [r[0] for r in result["raw_rounds"]]
    raw_p99s = [r[1] for r in result["raw_rounds"]]
    raw_maxes = [r[2] for r in result["raw_rounds"]]

    def summary(values: list[float]) -> str:
        runs = ", ".join(f"{v:.1f}" for v in values)
        return f"{statistics.median(values):.1f} ms (rounds: {runs})"

    per_socket = result["per_socket_kib"]
    return [
        "# Live updates: commit → message, and memory per idle socket",
        "",
        *provenance(
            database_command("bench.push.run"),
            setup="PostgreSQL 15 and Redis on the same host",
        ),
        "",
        "Two `edgemart serve --workers 1` on one database and Redis: `writer` takes the "
        "purchases, `holder` holds the sockets (the change crosses processes through the "
        "Redis broadcast). Latency: from just before each purchase request is sent (the "
        "commit happens inside it) to the stock message's arrival at each socket, over every "
        "(purchase, socket); one purchase every 400 ms (each past the 250 ms coalescing). "
        "The clients run in the bench's one process, on the same 2 cores as both servers, "
        "PostgreSQL and Redis.",
        "",
        f"## Commit → message, {args.sockets:,} sockets on the process that did not commit",
        "",
        f"{args.commits} purchases per round, {args.rounds} rounds "
        f"({args.commits * args.sockets:,} messages a round).",
        "",
        "| | median of rounds (each round's value) |",
        "|---|---|",
        f"| p50 | {summary(p50s)} |",
        f"| p99 | {summary(p99s)} |",
        f"| max | {summary(maxes)} |",
        "",
        f"**p99 {statistics.median(p99s):.1f} ms (target ≤ 100 ms).**",
        "",
        "The same, then, with the sockets held by minimal clients (bench/push/rawclient.py: "
        "the handshake, and the time each message's bytes reach the client's socket, with no "
        "WebSocket library parsing them in the bench's one process). The server side is the "
        "same; what differs is the clients' own cost on the shared cores.",
        "",
        "| | median of rounds (each round's value) |",
        "|---|---|",
        f"| p50 | {summary(raw_p50s)} |",
        f"| p99 | {summary(raw_p99s)} |",
        f"| max | {summary(raw_maxes)} |",
        "",
        f"**p99 at the socket {statistics.median(raw_p99s):.1f} ms (target ≤ 100 ms).**",
        "",
        f"## Memory per idle subscribed socket, {args.idle_sockets:,} sockets on one process",
        "",
        "| | |",
        "|---|---:|",
        f"| RSS before | {result['rss_before_kib'] / 1024:.1f} MiB |",
        f"| RSS with the sockets open and subscribed | {result['rss_after_kib'] / 1024:.1f} MiB |",
        f"| per socket | {per_socket:.1f} KiB |",
        f"| time to open and subscribe them (200 at a time) | {result['opened_s']:.1f} s |",
        "",
        f"**{per_socket:.1f} KiB per idle subscribed socket (aim ≤ 20 KB).**",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=1_000)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-sockets", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("bench/push/RESULTS.md"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.idle_sockets + args.sockets + 1_000
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    url = bench_database()
    with tempfile.TemporaryDirectory(prefix="bench-push-") as temp:
        result = asyncio.run(measure(args, url, Path(temp)))
    publish(args.out, report(args, result))


if __name__ == "__main__":
    main()

"""The fleet's read path: what the shared cache (L2) buys a cold process, and what a second
`edgemart serve` worker buys a host.

    python -m bench.fleet.run [--products N] [--rounds N] [--seconds S] [--concurrency N]
                              [--wrk-seconds S] [--connections N] [--parts inprocess,serve]
                              [--out bench/fleet/RESULTS.md]

DATABASE_URL (as admin, else an embedded PostgreSQL) gets a database of its own,
`edgemart_bench_fleet_<N>`, seeded once with the demo catalog (gateway.democatalog) and kept
between runs, with the home snapshot refresh_views leaves. Redis is a private `redis-server`
(Debian package `redis-server`) started for the run on a free loopback port and stopped after
it: the buffered counters' keys (`edgemart:view_counts`, ...) carry no namespace, so a shared
Redis would mix this run's counts with everyone else's. Every request asks for gzip, as
browsers and CloudFront do; rate limits are off for the three routes.

The requests: home; search over a fixed list of queries and sorts (`searches`, words of the
demo catalog); product detail over `PRODUCTS` products (a fixed sample of the listed ones).
As in production, a product request counts its view and a search its query in Redis (one
HINCRBY each), whichever way the page is served.

1. **In process** (`inprocess`): three apps built by `create_gateway` on three `Services`, in
   this one process, driven by an ASGI driver that calls the app directly (no sockets, no HTTP
   parsing): `--concurrency` requests in flight on one event loop, each client sending its next
   request when its last one is answered, for `--seconds` per batch. Per route, the variants
   run back to back in paired rounds (their order rotating), so a swing of the machine hits all
   three:
   - `l1`: the in-process cache alone (`SHARED_CACHE=off`), warm: today's steady state, every
     request an L1 hit (each batch is preceded by one pass over its keys, which reloads any
     entry that expired since the last);
   - `l2`: what a cold process sees: an L1 that never has a fresh copy (`ColdProcessCache`) in
     front of a warm shared cache (one pass over the keys just before each batch stores any
     expired entry again). A cold Lambda environment serves one request at a time, so no
     request here joins another's fill: each one is its own L2 lookup, as in that many
     separate environments;
   - `database`: the same cold L1 with no shared cache: every request loads from PostgreSQL
     and renders (JSON, ETag, gzip), the database path with no cache hit anywhere.
   Reported per route: requests/s, p50 and p99 of the time from the driver's call to the
   response's end (a request that never waits, an L1 hit without a counter, is never
   interleaved with another; one that waits for Redis or PostgreSQL queues behind the others
   on the loop), this process's CPU per request, and where the responses came from (the
   `cache_lookups` counters), with the counts kept in the process because Redis did not answer
   within its 50 ms (the machine's load can stall the loop that long; each such timeout leaves
   Redis alone for a second, which makes those requests cheaper or dearer). The default
   concurrency, 8, keeps the loop's own queue well under that. Then each part of those
   requests alone (a Redis and a PostgreSQL round trip, the L2 lookups, a view count, a home
   render), which says where the time goes. Target: `l2` ≥ 5× `database` in requests/s.

2. **Through the server** (`serve`): `edgemart serve --workers 1` and `--workers 2` on this
   database and Redis (each its own shared-cache namespace; scheduled jobs pushed to a day
   apart so none runs during the measurements; production's 1% access-log sampling), both
   started once and warmed, then driven in paired rounds, alternately, by `wrk` (Debian
   package `wrk`; one thread, `--connections` connections, loopback) with a Lua script picking
   each request at random from the read mix (`MIX`). Reported: requests/s, wrk's p50/p99, the
   CPU of the server's processes (each, and together), of wrk, of Redis and of the rest of the
   machine (PostgreSQL, the idle server, other users), and what each server's `/metrics`
   counted over the measured runs (L1 and L2 hits, Redis timeouts). Target: 2 workers ≥ 1.6×
   one worker. Nothing is pinned: two workers need both cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg

from bench.database import admin_url, query, seeded_catalog
from bench.ratelimit.gateway import SCOPE
from bench.report import database_command, provenance
from bench.serving import (
    CpuUse,
    Server,
    duration_ms,
    measure_cpu,
    private_redis,
    start_server,
    stop_server,
)
from bench.summary import median_range, paired_ratios, percentile, verdict
from edgemart.cache import Filled, Rendered, TTLCache
from edgemart.services import Services
from edgemart.settings import Settings

PRODUCTS = 1_000
"""Products the product-detail requests go round (a fixed sample of the listed ones)."""

ROUTES = ("home", "search", "product")
ROUTE_LABELS = {
    "home": "home",
    "search": "search",
    "product": "product detail",
}
VARIANTS = ("l1", "l2", "database")
VARIANT_LABELS = {
    "l1": "L1 only, warm",
    "l2": "cold L1 + warm L2",
    "database": "database path",
}
MIX = {"home": 2, "search": 3, "product": 5}
"""The read mix `wrk` sends, in tenths: home 20%, search 30%, product detail 50%."""
ROUTE_GROUPS = ("home", "search", "store")
"""The rate-limit groups of the three routes, all lifted."""


# ---- The catalog ----


def catalog(admin: str, size: int) -> str:
    """`edgemart_bench_fleet_<size>`, created, migrated by this checkout and seeded unless it
    already holds `size` products; the home snapshot is stored afresh either way."""
    from edgemart.homepage import STORE_SNAPSHOT_SQL

    url = seeded_catalog(admin, f"edgemart_bench_fleet_{size}", size)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(STORE_SNAPSHOT_SQL)  # what refresh_views leaves for the home function
    return url


def searches() -> list[str]:
    """The search requests' query strings: a material and a kind of product, or the kind
    alone, from the demo catalog's words, each with a sort; fixed, so every run asks the
    same."""
    from gateway.democatalog import CATEGORIES, MATERIALS

    rng = random.Random(11)
    queries: dict[str, None] = {}
    while len(queries) < 120:
        noun = rng.choice(rng.choice(CATEGORIES).nouns).split()[-1]
        words = noun if rng.random() < 0.3 else f"{rng.choice(MATERIALS)} {noun}"
        sort = rng.choice(("relevance", "relevance", "price_asc", "newest", "popular"))
        queries[urlencode({"q": words, "sort": sort})] = None
    return list(queries)


def product_ids(url: str) -> list[str]:
    """`PRODUCTS` listed products (the product route answers them), the same every run."""
    rows = query(
        url,
        "SELECT p.id FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active "
        "ORDER BY md5(p.id::text) LIMIT %s",
        [PRODUCTS],
    )
    return [str(row[0]) for row in rows]


def requests_of(url: str) -> dict[str, list[tuple[str, str]]]:
    """Per route, its (path, query string) requests."""
    return {
        "home": [("/marketplace/home", "")],
        "search": [("/marketplace/search", query) for query in searches()],
        "product": [(f"/products/{product}", "") for product in product_ids(url)],
    }


# ---- Part 1: in process ----


@dataclass
class Batch:
    """One closed-loop batch of one route on one variant."""

    requests: int
    seconds: float
    cpu_s: float
    """This process's CPU (driver and app) over the batch."""
    latencies_ms: list[float]
    sources: Counter[str]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6


class _NothingInFlight(dict[str, "asyncio.Task[Filled]"]):
    """An in-flight table that never holds a fill, so no request joins another's."""

    def __setitem__(self, key: str, value: asyncio.Task[Filled], /) -> None:
        return None


class ColdProcessCache(TTLCache):
    """L1 as a process that has never served the key sees it, on every request: no fresh
    copy, and no request joins another's fill (a cold Lambda environment serves one request
    at a time), so each looks further itself. What a fill brings is kept, as a new process
    keeps it: the search route reads the page it just served back (`last_good`) to decide
    whether to count the query."""

    def __init__(self, like: TTLCache) -> None:
        super().__init__(fill=like.fill, trust=like.trust)
        self._inflight = _NothingInFlight()

    def fresh(self, key: str) -> Rendered | None:
        return None


def variant_services(variant: str, database_url: str, redis_url: str) -> Services:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        shared_cache="auto" if variant == "l2" else "off",
        shared_cache_namespace=f"benchfleet-inprocess-{os.getpid()}",
        rate_limit_overrides=tuple((group, 0, 60) for group in ROUTE_GROUPS),
        cursor_secret="bench-fleet",
    )
    services = Services.from_settings(settings)
    if variant != "l1":
        services.cache = ColdProcessCache(services.cache)
    return services


def scope_of(path: str, query: str) -> dict[str, Any]:
    """The in-process benchmarks' GET (`SCOPE`: host and user agent `bench`, a documentation
    address for the client) of `path` and `query`, asking for gzip."""
    return {
        **SCOPE,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [*SCOPE["headers"], (b"accept-encoding", b"gzip")],
    }


async def call(app: Any, scope: dict[str, Any]) -> int:
    """One request through the app; its status."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app({**scope, "headers": list(scope["headers"])}, receive, send)
    return status


def sources() -> Counter[str]:
    """Where this process's cached-route responses came from so far, by the cache counters,
    and how many counts (views, searches) were kept in the process because Redis did not
    answer in time (`fallbacks`): both a slow L2 and a slow counter change what a request
    costs."""
    from edgemart import metrics

    def count(layer: str, result: str) -> float:
        return metrics.count(metrics.CACHE_LOOKUPS, layer=layer, result=result)

    l1_miss, l2_hit, l2_unavailable = (
        count("l1", "miss"),
        count("l2", "hit"),
        count("l2", "unavailable"),
    )
    return Counter(
        {
            "L1": round(count("l1", "hit")),
            "L2": round(l2_hit),
            "db": round(l1_miss - l2_hit - l2_unavailable),
            "db, L2 timed out": round(l2_unavailable),
            "stale": round(count("l1", "stale")),
            FALLBACKS: round(metrics.count(metrics.COUNTER_FALLBACKS)),
        }
    )


FALLBACKS = "fallbacks"


async def closed_loop(
    app: Any, scopes: Sequence[dict[str, Any]], concurrency: int, seconds: float
) -> Batch:
    """`concurrency` clients, each sending its next request (the next of `scopes`, in turn)
    as soon as its last is answered, until `seconds` are up."""
    order = itertools.cycle(scopes)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    before = sources()
    started = time.perf_counter()
    deadline = started + seconds
    cpu_before = time.process_time()

    async def client() -> None:
        while time.perf_counter() < deadline:
            scope = next(order)
            sent = time.perf_counter()
            statuses[await call(app, scope)] += 1
            latencies.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {dict(statuses)}")
    return Batch(len(latencies), elapsed, cpu, latencies, sources() - before)


async def one_pass(app: Any, scopes: Sequence[dict[str, Any]]) -> None:
    """Each request once, one at a time: fills L1 (`l1`) or L2 (`l2`) where an entry expired."""
    for scope in scopes:
        status = await call(app, scope)
        if status != 200:
            raise RuntimeError(f"{scope['path']}?{scope['query_string'].decode()}: {status}")


Results = dict[tuple[str, str], list[Batch]]


@dataclass(frozen=True)
class Component:
    """One part of a request's work, alone: calls per second at the batches' concurrency
    and this process's CPU per call (medians of `COMPONENT_BATCHES` batches)."""

    label: str
    per_second: float
    cpu_us: float


COMPONENT_BATCHES = 3


async def calls_loop(
    call_once: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[float, float]:
    """Like `closed_loop` for a bare coroutine: (calls per second, CPU µs per call)."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    cpu_before = time.process_time()

    async def client() -> None:
        nonlocal calls
        while time.perf_counter() < deadline:
            await call_once()
            calls += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    return calls / elapsed, cpu / calls * 1e6


async def components(
    services: dict[str, Services], products: Sequence[str], concurrency: int, seconds: float
) -> list[Component]:
    """What the cold-L1 and database variants' requests are made of, each part alone: a bare
    round trip to Redis and to PostgreSQL from this process, the L2 lookups the cold process
    makes, and the render a database-path response needs."""
    from edgemart.counters import VIEW_COUNTS_KEY, RedisCounts
    from edgemart.sharedcache import RedisSharedCache

    # The cold process's shared cache and view counter, but waiting up to a second for Redis:
    # a call the machine's load delays past the usual 50 ms must not change what is measured.
    configured = services["l2"].shared_cache
    if not isinstance(configured, RedisSharedCache):
        raise RuntimeError("the cold-L1 variant has no shared cache")
    redis = configured.redis
    shared = RedisSharedCache(redis, namespace=configured.names.namespace, timeout_s=1.0)
    views = RedisCounts(redis, VIEW_COUNTS_KEY, timeout_s=1.0)
    reads = services["database"].reads
    home = (await shared.lookup("home")).rendered
    if home is None:
        raise RuntimeError("the home page is not in L2")
    document = json.loads(home.body)
    product_keys = itertools.cycle(f"product:{product}" for product in products)
    viewed = itertools.cycle(products)

    async def select_one() -> None:
        async with reads.connection() as conn:
            await conn.execute(b"SELECT 1")

    async def render_home() -> None:
        Rendered.of(document, now=0.0, tags=home.tags)

    parts: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("Redis round trip (PING)", lambda: redis.client().ping()),
        ("L2 lookup of home (GET, decode)", lambda: shared.lookup("home")),
        ("L2 lookup of a product (GET, decode)", lambda: shared.lookup(next(product_keys))),
        (
            "a product view counted (in memory; written to Redis in batches)",
            lambda: views.record(next(viewed)),
        ),
        ("PostgreSQL round trip (SELECT 1, pooled connection)", select_one),
        ("home rendered from its document (JSON, ETag, gzip)", render_home),
    ]
    measured = []
    for label, call_once in parts:
        runs = [await calls_loop(call_once, concurrency, seconds) for _ in range(COMPONENT_BATCHES)]
        measured.append(
            Component(
                label,
                statistics.median(run[0] for run in runs),
                statistics.median(run[1] for run in runs),
            )
        )
    return measured


async def in_process(
    database_url: str,
    redis_url: str,
    requests: dict[str, list[tuple[str, str]]],
    *,
    rounds: int,
    seconds: float,
    concurrency: int,
) -> tuple[Results, list[Component]]:
    from edgemart.logging import logger
    from gateway.app import create_gateway

    # Sampled access lines are still formatted; only the write goes to /dev/null.
    logger.registered_handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115
    services = {variant: variant_services(variant, database_url, redis_url) for variant in VARIANTS}
    apps = {variant: create_gateway(services[variant]) for variant in VARIANTS}
    scopes = {route: [scope_of(*request) for request in requests[route]] for route in ROUTES}
    rng = random.Random(5)
    for route_scopes in scopes.values():
        rng.shuffle(route_scopes)
    # Pools opened, every key loaded, the database's pages read. Twice: a fresh process's first
    # Redis call imports redis-py within its 50 ms timeout and fails, and the shared cache then
    # leaves Redis alone for a second, so the first pass may store nothing in L2.
    for _ in range(2):
        for variant in VARIANTS:
            for route in ROUTES:
                await one_pass(apps[variant], scopes[route])
    results: Results = {(route, variant): [] for route in ROUTES for variant in VARIANTS}
    try:
        for index in range(rounds):
            order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]
            for route in ROUTES:
                for variant in order:
                    if variant != "database":
                        await one_pass(apps[variant], scopes[route])
                    batch = await closed_loop(apps[variant], scopes[route], concurrency, seconds)
                    results[route, variant].append(batch)
            print(f"in process: round {index + 1}/{rounds} done", flush=True)
        products = [path.rsplit("/", 1)[1] for path, _ in requests["product"]]
        await one_pass(apps["l2"], scopes["home"])  # its L2 entry is fresh
        parts = await components(services, products, concurrency, seconds)
    finally:
        for each in services.values():
            await each.aclose()
    return results, parts


# ---- Part 2: edgemart serve, driven by wrk ----

WRK_SCRIPT = """
local paths = {{ {paths} }}
local count = #paths
wrk.headers["Accept-Encoding"] = "gzip"
request = function()
  return wrk.format("GET", paths[math.random(count)])
end
"""


def wrk_script(requests: dict[str, list[tuple[str, str]]], folder: Path) -> Path:
    """The Lua script: 1,000 paths in the proportions of `MIX`, each route's requests taken
    in turn, one picked at random per request."""
    paths: list[str] = []
    for route, tenths in MIX.items():
        cycle = itertools.cycle(requests[route])
        for _ in range(tenths * 100):
            path, query = next(cycle)
            paths.append(f"{path}?{query}" if query else path)
    script = folder / "mix.lua"
    quoted = ", ".join(f'"{path}"' for path in paths)
    script.write_text(WRK_SCRIPT.format(paths=quoted))
    return script


@dataclass
class WrkRun:
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu: CpuUse
    """The load generator is wrk; PostgreSQL is not told apart, so it is in the rest."""

    @property
    def per_server_cpu_s(self) -> float:
        return self.per_second / self.cpu.server_total


def serve_environment(workers: int) -> dict[str, str]:
    """What `edgemart serve --workers N` runs with here: its own shared-cache namespace and
    the three routes' rate limits lifted."""
    return {
        "SHARED_CACHE_NAMESPACE": f"benchfleet-serve-{workers}",
        **{f"RATE_LIMIT_{group.upper()}": "off" for group in ROUTE_GROUPS},
        "JWT_SECRET": "bench-fleet-secret-" + "x" * 32,
        "CURSOR_SECRET": "bench-fleet",
    }


def wrk_run(
    server: Server, script: Path, seconds: float, connections: int, redis_pid: int
) -> WrkRun:
    def run() -> str:
        return subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
            + ["-s", str(script), server.url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    output, cpu = measure_cpu(run, server, redis_pid)
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"\s50%\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    return WrkRun(float(rate[1]), duration_ms(p50[1]), duration_ms(p99[1]), cpu)


def metric_totals(server: Server) -> Counter[str]:
    """What the server's `/metrics` counted so far (every worker's totals): cache lookups by
    layer and result (`l1 hit`, `l2 unavailable`, ...) and counts kept in a worker because
    Redis did not answer in time (`fallbacks`)."""
    time.sleep(1.5)  # every worker has written its totals (gateway.workermetrics)
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals: Counter[str] = Counter()
    sample = re.compile(
        r"^edgemart_(cache_lookups|counter_fallbacks)_total\{([^}]*)\} (\S+)$", re.M
    )
    for metric, labels, value in sample.findall(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        name = FALLBACKS if metric == "counter_fallbacks" else f"{found['layer']} {found['result']}"
        totals[name] += round(float(value))
    return totals


def cache_summary(totals: Counter[str]) -> str:
    """`97.0% of 30,000 L1 lookups hits; 12.0% of 900 L2 lookups hits, 0 timed out; ...`"""
    l1 = sum(value for name, value in totals.items() if name.startswith("l1 "))
    l2 = sum(value for name, value in totals.items() if name.startswith("l2 "))
    text = f"{totals['l1 hit'] / (l1 or 1):.1%} of {l1:,} L1 lookups hits"
    if l2:
        text += (
            f"; {totals['l2 hit'] / l2:.1%} of {l2:,} L2 lookups hits, "
            f"{totals['l2 unavailable']:,} timed out"
        )
    return text + f"; {totals[FALLBACKS]:,} counts kept locally (Redis too slow)"


@dataclass
class Served:
    runs: dict[int, list[WrkRun]] = field(default_factory=dict)
    caches: dict[int, Counter[str]] = field(default_factory=dict)
    """Per server, its `metric_totals` over the measured runs."""


def through_server(
    database_url: str,
    redis: tuple[str, int],
    requests: dict[str, list[tuple[str, str]]],
    folder: Path,
    *,
    rounds: int,
    seconds: float,
    connections: int,
) -> Served:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    redis_url, redis_pid = redis
    script = wrk_script(requests, folder)
    served = Served({1: [], 2: []})
    with ExitStack() as stack:
        servers = {}
        for workers in (1, 2):
            servers[workers] = start_server(
                workers, database_url, redis_url, folder, serve_environment(workers)
            )
            stack.callback(stop_server, servers[workers])
        for server in servers.values():  # every worker's L1 and the shared cache filled
            wrk_run(server, script, 3, connections, redis_pid)
        before = {workers: metric_totals(server) for workers, server in servers.items()}
        for index in range(rounds):
            for workers in (1, 2) if index % 2 == 0 else (2, 1):
                served.runs[workers].append(
                    wrk_run(servers[workers], script, seconds, connections, redis_pid)
                )
            print(f"serve: round {index + 1}/{rounds} done", flush=True)
        for workers, server in servers.items():
            served.caches[workers] = metric_totals(server) - before[workers]
    return served


# ---- The report ----


def where_from(total: Counter[str]) -> str:
    """`L2 99.9%, db 0.1%`, and the counts kept locally when Redis did not answer in time."""
    fallbacks = total.pop(FALLBACKS, 0)
    count = sum(total.values()) or 1
    where = ", ".join(f"{name} {value / count:.1%}" for name, value in total.most_common() if value)
    if fallbacks:
        where += f"; {fallbacks:,} counts kept locally (Redis too slow)"
    return where


def in_process_report(results: Results, args: argparse.Namespace) -> list[str]:
    lines = [
        "## 1. In process: L1 warm vs cold L1 + warm L2 vs the database path",
        "",
        f"ASGI driver calling the gateway app (`create_gateway`) directly, no sockets: "
        f"{args.concurrency} requests in flight on one event loop (closed loop), batches of "
        f"{args.seconds:g} s, the three variants back to back for each route in each of "
        f"{args.rounds} rounds (order rotating). Requests/s and CPU: median (range) over the "
        "rounds; p50/p99 over every request of every round. *CPU µs/request*: this process "
        "(driver and app; not PostgreSQL's or Redis's) per request. *From*: where the "
        "responses came from, by the cache counters.",
        "",
        "| route | variant | requests/s | p50 ms | p99 ms | CPU µs/request | from |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for route in ROUTES:
        for variant in VARIANTS:
            batches = results[route, variant]
            latencies = [value for batch in batches for value in batch.latencies_ms]
            where = where_from(sum((batch.sources for batch in batches), Counter()))
            lines.append(
                f"| {ROUTE_LABELS[route]} | {VARIANT_LABELS[variant]} | "
                f"{median_range([batch.per_second for batch in batches])} | "
                f"{percentile(latencies, 0.5):.2f} | {percentile(latencies, 0.99):.2f} | "
                f"{median_range([batch.cpu_us_per_request for batch in batches])} | {where} |"
            )
    lines += [
        "",
        "Paired ratios of requests/s (median of the rounds' ratios, range):",
        "",
        "| route | cold L1 + warm L2 / database path (target ≥ 5×) | L1 warm / cold L1 + warm "
        "L2 | L1 warm / database path: what an L2 costing nothing would reach |",
        "|---|---:|---:|---:|",
    ]
    for route in ROUTES:
        rates = {
            variant: [batch.per_second for batch in results[route, variant]] for variant in VARIANTS
        }
        l2_db = paired_ratios(rates["l2"], rates["database"])
        l1_l2 = paired_ratios(rates["l1"], rates["l2"])
        l1_db = paired_ratios(rates["l1"], rates["database"])
        lines.append(
            f"| {ROUTE_LABELS[route]} | {median_range(l2_db, '{:.2f}×')} "
            f"{verdict(l2_db, 5)} | {median_range(l1_l2, '{:.2f}×')} | "
            f"{median_range(l1_db, '{:.2f}×')} |"
        )
    return lines


def components_report(results: Results, parts: list[Component]) -> list[str]:
    lines = [
        "",
        "Where the time goes: each part of those requests alone, in this process, at the same "
        "concurrency (median of "
        f"{COMPONENT_BATCHES} batches after the rounds):",
        "",
        "| part | calls/s | CPU µs/call |",
        "|---|---:|---:|",
        *(f"| {part.label} | {part.per_second:,.0f} | {part.cpu_us:,.0f} |" for part in parts),
        "",
    ]

    def cpu(route: str, variant: str) -> float:
        return statistics.median(batch.cpu_us_per_request for batch in results[route, variant])

    floor = {route: cpu(route, "l1") for route in ROUTES}
    lines.append(
        "A request's CPU above an L1 hit's (same middleware, response and counters), "
        "median µs: "
        + "; ".join(
            f"{ROUTE_LABELS[route]}: cold L1 + warm L2 +{cpu(route, 'l2') - floor[route]:,.0f}, "
            f"database path +{cpu(route, 'database') - floor[route]:,.0f}"
            for route in ROUTES
        )
        + "."
    )
    return lines


def served_report(served: Served, args: argparse.Namespace) -> list[str]:
    share = ", ".join(f"{route} {tenths * 10}%" for route, tenths in MIX.items())
    lines = [
        "## 2. Through `edgemart serve`: 2 workers vs 1",
        "",
        f"`edgemart serve --workers 1` and `--workers 2`, both running throughout, driven "
        f"alternately by wrk (1 thread, {args.connections} connections, loopback, "
        f"{args.wrk_seconds:g} s per run, {args.rounds} paired rounds after a 3 s warm-up of "
        f"each) with the read mix ({share}; one path at random per request). Nothing pinned. "
        "Median (range) over the rounds; CPU in cores (CPU-seconds per second of the run).",
        "",
        "| workers | requests/s | wrk p50 ms | wrk p99 ms | server CPU | by process | "
        "requests per server CPU-s | wrk CPU | Redis CPU | rest of the machine |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for workers, runs in served.runs.items():
        roles = sorted(runs[0].cpu.server)
        by_process = ", ".join(
            f"{role} {statistics.median(run.cpu.server.get(role, 0.0) for run in runs):.2f}"
            for role in roles
        )
        lines.append(
            f"| {workers} | {median_range([run.per_second for run in runs])} | "
            f"{median_range([run.p50_ms for run in runs], '{:.2f}')} | "
            f"{median_range([run.p99_ms for run in runs], '{:.1f}')} | "
            f"{median_range([run.cpu.server_total for run in runs], '{:.2f}')} | {by_process} | "
            f"{median_range([run.per_server_cpu_s for run in runs])} | "
            f"{median_range([run.cpu.load_generator for run in runs], '{:.2f}')} | "
            f"{median_range([run.cpu.redis for run in runs], '{:.2f}')} | "
            f"{median_range([run.cpu.rest for run in runs], '{:.2f}')} |"
        )
    ratios = paired_ratios(
        [run.per_second for run in served.runs[2]], [run.per_second for run in served.runs[1]]
    )
    per_cpu = paired_ratios(
        [run.per_server_cpu_s for run in served.runs[2]],
        [run.per_server_cpu_s for run in served.runs[1]],
    )
    lines += [
        "",
        f"**2 workers / 1 worker: {median_range(ratios, '{:.2f}×')} requests/s** (median of "
        f"the {args.rounds} paired rounds' ratios, range; target ≥ 1.6×: {verdict(ratios, 1.6)}); "
        f"requests per server CPU-second, 2 / 1: {median_range(per_cpu, '{:.2f}×')}.",
        "",
        "What the servers' `/metrics` counted over the measured runs: "
        + "; ".join(
            f"{workers} worker{'s' if workers > 1 else ''}: {cache_summary(totals)}"
            for workers, totals in served.caches.items()
        )
        + ".",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000, help="catalog size")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds of each part")
    parser.add_argument("--seconds", type=float, default=1.5, help="per in-process batch")
    parser.add_argument("--concurrency", type=int, default=8, help="in-process requests in flight")
    parser.add_argument("--wrk-seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--parts", default="inprocess,serve", help="of inprocess, serve")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args()
    wanted = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not wanted or wanted - {"inprocess", "serve"}:
        sys.exit("--parts takes inprocess, serve or both")

    load_before = os.getloadavg()
    started = time.monotonic()
    sections: list[str] = []
    with admin_url() as admin, tempfile.TemporaryDirectory(prefix="benchfleet-") as temp:
        folder = Path(temp)
        database_url = catalog(admin, args.products)
        requests = requests_of(database_url)
        with private_redis(folder) as redis:
            if "inprocess" in wanted:
                results, parts = asyncio.run(
                    in_process(
                        database_url,
                        redis[0],
                        requests,
                        rounds=args.rounds,
                        seconds=args.seconds,
                        concurrency=args.concurrency,
                    )
                )
                sections += [
                    "",
                    *in_process_report(results, args),
                    *components_report(results, parts),
                ]
            if "serve" in wanted:
                served = through_server(
                    database_url,
                    redis,
                    requests,
                    folder,
                    rounds=args.rounds,
                    seconds=args.wrk_seconds,
                    connections=args.connections,
                )
                sections += ["", *served_report(served, args)]
    load_after = os.getloadavg()
    minutes = (time.monotonic() - started) / 60
    text = "\n".join(
        [
            "# The fleet's read path: L1, L2 and the database; one serve worker vs two",
            "",
            *provenance(
                database_command("bench.fleet.run"),
                setup="PostgreSQL and a private Redis on the same machine",
            ),
            "",
            f"Catalog: {args.products:,} products (demo catalog), home from its snapshot; "
            f"search over {len(requests['search'])} fixed queries and sorts; product detail "
            f"over {len(requests['product']):,} listed products. Every request accepts gzip; "
            "rate limits off. Load average (1, 5, 15 min) "
            f"{', '.join(f'{value:.1f}' for value in load_before)} when the run began, "
            f"{', '.join(f'{value:.1f}' for value in load_after)} when it ended "
            f"({minutes:.1f} minutes).",
            *sections,
        ]
    )
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

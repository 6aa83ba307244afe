"""The fleet acceptance test: every fleet part at once, as a deployment runs them.

Topology (loopback only, every server the test's own but the suite's PostgreSQL):
- a primary and a streaming replica (tests/support/replica.py), on a database of this test's
  own with the chaos catalog (tests/chaos/load.py);
- PgBouncer in transaction mode in front of the primary (tests/pgbouncer.py);
- a private redis-server, to kill and restart;
- three `edgemart serve`s (separate processes, so the scheduler lease is all that keeps two
  of them from running the jobs), with the same settings: the database through PgBouncer
  (`DATABASE_POOLER=transaction`), the replica direct, rate limits in Redis, edge purge on;
- a Varnish with the generated VCL in front of one serve that does not lead (the VCL names one
  backend), which every serve purges.

Under the chaos suite's mixed load (reads and retried purchases) on the two serves that do
not lead and on Varnish, the test checks, in order: a rate limit is exact across processes;
every write (a listing PATCH or a purchase, sent to each serve in turn) is seen by every serve
and through Varnish within a second; so while the replica lags and while it is down; Redis
killed and restarted costs no 5xx and writes are seen everywhere within a second again; the
leader killed with SIGKILL, a standby runs the jobs within 30 s, each once per period. It ends
with the chaos suite's ledger checks. A summary is printed (`-s`). Under a minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from edgemart.migrate import apply_migrations
from gateway.democatalog import seed_catalog
from tests.chaos.load import ChaosCatalog, MixedLoad, ledger_problems
from tests.conftest import DEMO_AS_OF, RedisProcess, unused_port
from tests.integration.test_fleet_scheduler import (
    JOB,
    assert_once_per_period,
    runs,
    tenures,
    wait_for,
)
from tests.integration.test_serve_workers import Serve, scrape, serve_with_workers
from tests.pgbouncer import EXECUTABLE as PGBOUNCER
from tests.pgbouncer import PgBouncer
from tests.support.listings import new_listing
from tests.support.replica import ReplicatedPostgres, replicated_postgres, replication
from tests.support.sql import sql
from tests.support.varnish import VARNISHD, varnish

__all__ = ["replicated_postgres", "replication"]  # the fixtures, used by name below

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.fleet,
    pytest.mark.skipif(VARNISHD is None, reason="varnishd not installed (.ci/run installs it)"),
    pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer not installed (.ci/run installs it)"),
]

SECRET = "fleet-tests-secret-of-at-least-32-bytes!"
OWNER = "fleet-owner"
WATCHER = "fleet-watcher"
"""The buyer whose purchases are watched (the load's buyers are `buyer-1`…)."""
VISIBLE_WITHIN_S = 1.0
"""The spec's bound: a committed write is served by every process and the edge within it."""
TAKEOVER_WITHIN_S = 30.0
SEARCH_LIMIT = 12
"""RATE_LIMIT_SEARCH for the fleet; the load never searches, so only the probe counts."""
PROBE_ADDRESS = "127.0.0.9"
"""The rate-limit probe's own client address (the load comes from 127.0.0.1)."""
EVERY_S = 1.0
"""The job's period (SCHEDULE_INTERVALS)."""
READ_YOUR_WRITES_S = 1.0
"""Short, so a read-only spell of a few seconds sends public reads by the lag policy alone."""
SPELL_LIMIT_S = 20.0
"""How long a read-only spell may take to see the replica's state routed around."""


def token(sub: str) -> dict[str, str]:
    signed = jwt.encode({"sub": sub, "exp": int(time.time()) + 900}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {signed}"}


@dataclass
class Fleet:
    pair: ReplicatedPostgres
    url: str
    """The fleet's database on the primary, direct."""
    redis: RedisProcess
    serves: dict[str, Serve]
    leader: str
    """The serve that led first; the load spares it, so killing it costs the load nothing."""
    edge_url: str
    product: str
    """The watched listing: OWNER's, in a store of its own."""
    catalog: ChaosCatalog
    cold: list[str]
    """Products the load never reads: each is a cache miss the first time, a database read
    (taken from the list as read)."""


@contextmanager
def fleet_database(pair: ReplicatedPostgres) -> Iterator[tuple[str, str]]:
    """A database of this test's own on the pair (the session's pair keeps its own database
    as other tests left it): (primary URL, replica URL)."""
    name = f"edgemart_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pair.primary.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield pair.primary.url(name), pair.replica.url(name)
    finally:
        with psycopg.connect(pair.primary.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def prepare(url: str) -> None:
    """Migrated, the chaos catalog seeded (stock and wallets deep enough for the whole run),
    and the watched listing with its funded buyer: its id."""
    apply_migrations(url)
    seed_catalog(url, products=300, stores=5, seed=4, as_of=DEMO_AS_OF, buyers=20)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE products SET stock = stock + 1000 WHERE is_available")
        conn.execute("UPDATE wallets SET balance_cents = balance_cents + 100000000")
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) VALUES (%s, 100000000)", [WATCHER]
        )


def serve_environment(url: str, replica_url: str, redis_url: str, edge_url: str) -> dict[str, str]:
    lots = "1000000/60"
    return {
        "DATABASE_URL": url,
        "DATABASE_POOLER": "transaction",
        "DB_STATEMENT_TIMEOUT_MS": "0",  # a transaction pooler refuses connection options
        "DATABASE_REPLICA_URL": replica_url,
        "REPLICA_MAX_LAG_S": "1",
        "REPLICA_CHECK_INTERVAL_S": "0.2",
        "READ_YOUR_WRITES_S": str(READ_YOUR_WRITES_S),
        "REDIS_URL": redis_url,
        "RATE_LIMIT_BACKEND": "redis",
        # Exactness is under test, not Redis's latency on a busy 2-core machine: a check that
        # waited out the default 50 ms would be counted by the process alone, by design.
        "RATE_LIMIT_TIMEOUT_MS": "1000",
        "RATE_LIMIT_SEARCH": f"{SEARCH_LIMIT}/60",
        "RATE_LIMIT_HOME": lots,
        "RATE_LIMIT_STORE": lots,
        "RATE_LIMIT_LISTINGS": lots,
        "RATE_LIMIT_PURCHASES": lots,
        "SHARED_CACHE_TIMEOUT_MS": "1000",
        "JWT_SECRET": SECRET,
        "CURSOR_SECRET": "fleet-cursor-secret",
        "EDGE_PURGE": "varnish",
        "EDGE_PURGE_URL": edge_url,
        "SCHEDULE_INTERVALS": f"{JOB}={EVERY_S:g}",
        "ACCESS_LOG_SAMPLE_RATE": "0",  # small logs: the test reads them for the job runs
    }


@pytest.fixture
def fleet(replication: ReplicatedPostgres, tmp_path: Path) -> Iterator[Fleet]:
    with ExitStack() as stack:
        url, replica_url = stack.enter_context(fleet_database(replication))
        prepare(url)
        bouncer = PgBouncer(url, tmp_path / "pgbouncer", unused_port())
        bouncer.directory.mkdir()
        bouncer.start()
        stack.callback(bouncer.stop)
        redis = RedisProcess(unused_port(), tmp_path)
        redis.start()
        stack.callback(redis.kill)
        edge_port = unused_port()
        env = serve_environment(
            bouncer.url(url), replica_url, redis.url, f"http://127.0.0.1:{edge_port}"
        )
        serves = {
            name: stack.enter_context(
                serve_with_workers(bouncer.url(url), tmp_path, 1, env=env, name=name)
            )
            for name in ("one", "two", "three")
        }
        wait_for(lambda: len(runs(serves)) >= 2, "the leader's first runs")
        [first] = tenures(serves)
        backend = next(name for name in serves if name != first.serve)
        (tmp_path / "edge").mkdir()
        backend_port = int(serves[backend].url.rsplit(":", 1)[1])
        process, edge_url = varnish(tmp_path / "edge", backend_port, port=edge_port)

        def stop_edge() -> None:
            process.terminate()
            process.communicate(timeout=10)

        stack.callback(stop_edge)
        product = listing(serves[backend].url)
        replication.wait_caught_up()
        catalog = ChaosCatalog.read(url)
        # The load buys from the catalog, never the watched product (its stock is watched).
        catalog = dataclasses.replace(
            catalog, products=[p for p in catalog.products if p != product]
        )
        cold = unread_products(url, [product, *catalog.products])
        yield Fleet(replication, url, redis, serves, first.serve, edge_url, product, catalog, cold)


def unread_products(url: str, read: list[str]) -> list[str]:
    """Public products other than `read`."""
    rows = sql(
        url,
        "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active "
        "AND NOT p.id = ANY(%s::uuid[]) ORDER BY p.id",
        read,
    )
    return [row[0] for row in rows]


def listing(base_url: str) -> str:
    """OWNER's store and one product in it, made through a serve: the product's id."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        product, _ = new_listing(
            client,
            token(OWNER),
            slug_prefix="fleet",
            name="fleet lamp",
            price_cents=1000,
            stock=100_000,
        )
        return product


@dataclass
class Watch:
    """The writes made and how long each took to be seen everywhere."""

    fleet: Fleet
    latencies: dict[str, list[float]] = field(default_factory=dict)
    writes: int = 0
    price: int = 1000

    def readers(self) -> dict[str, str]:
        """Every live serve, directly, and the edge."""
        live = {
            name: serve.url
            for name, serve in self.fleet.serves.items()
            if serve.process.poll() is None
        }
        return {**live, "edge": self.fleet.edge_url}

    async def write(self, client: httpx.AsyncClient, phase: str) -> None:
        """A PATCH of the price or a purchase of one unit, sent to the next live serve, then
        every reader polled until it shows it."""
        product = self.fleet.product
        writers = [url for name, url in self.readers().items() if name != "edge"]
        target = writers[self.writes % len(writers)]
        self.writes += 1
        if self.writes % 2:
            self.price += 1
            response = await client.patch(
                f"{target}/products/{product}",
                json={"price_cents": self.price},
                headers=token(OWNER),
            )
            assert response.status_code == 200, response.text
        else:
            response = await client.post(
                f"{target}/purchases",
                json={"product_id": product, "quantity": 1},
                headers={**token(WATCHER), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 201, response.text
        committed = time.monotonic()
        expected = await self.now_shown()
        seen = await asyncio.gather(
            *(self.until_shown(client, url, expected) for url in self.readers().values())
        )
        latency = max(at - committed for at in seen)
        self.latencies.setdefault(phase, []).append(latency)

    async def now_shown(self) -> tuple[int, int]:
        """(price, stock) of the watched product, on the primary."""

        def read() -> tuple[int, int]:
            [(price, stock)] = sql(
                self.fleet.url,
                "SELECT price_cents, stock FROM products WHERE id = %s",
                self.fleet.product,
            )
            return int(price), int(stock)

        return await asyncio.to_thread(read)

    async def until_shown(
        self, client: httpx.AsyncClient, base_url: str, expected: tuple[int, int]
    ) -> float:
        """When `base_url` first serves the product as `expected`; fails a little past the
        bound (the latency is asserted on afterwards, with every reader's)."""
        deadline = time.monotonic() + VISIBLE_WITHIN_S + 4.0
        last: object = None
        while time.monotonic() < deadline:
            response = await client.get(f"{base_url}/products/{self.fleet.product}")
            assert response.status_code < 500, (base_url, response.status_code, response.text)
            if response.status_code == 200:
                page = response.json()
                last = (page["price_cents"], page["stock_available"])
                if last == expected:
                    return time.monotonic()
            await asyncio.sleep(0.01)
        raise AssertionError(f"{base_url} still shows {last}, not {expected}")

    def max_latency(self, phase: str | None = None) -> float:
        found = [
            latency
            for name, values in self.latencies.items()
            if phase is None or name == phase
            for latency in values
        ]
        return max(found)


async def rate_limit_is_exact(fleet: Fleet) -> dict[str, int]:
    """SEARCH_LIMIT + 3 searches from one address at once, spread over the three serves:
    exactly SEARCH_LIMIT are served, and each serve refuses one of the others. Then one more
    at each serve: refused by each."""
    urls = [serve.url for serve in fleet.serves.values()]
    transport = httpx.AsyncHTTPTransport(local_address=PROBE_ADDRESS)
    async with httpx.AsyncClient(transport=transport, timeout=30) as probe:
        responses = await asyncio.gather(
            *(
                probe.get(f"{urls[i % 3]}/marketplace/search", params={"q": "lamp"})
                for i in range(SEARCH_LIMIT + 3)
            )
        )
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [200] * SEARCH_LIMIT + [429] * 3, statuses
        more = [
            (await probe.get(f"{url}/marketplace/search", params={"q": "lamp"})).status_code
            for url in urls
        ]
        assert more == [429, 429, 429]
    return {"served": statuses.count(200), "refused": statuses.count(429) + 3}


async def test_the_fleet(fleet: Fleet) -> None:
    pair, serves = fleet.pair, fleet.serves
    load = MixedLoad(fleet.catalog, SECRET, buyers=20, retry_purchases=True)
    watch = Watch(fleet)
    loaded = [url for name, s in serves.items() if name != fleet.leader for url in [s.url]]
    async with (
        AsyncClients([*loaded, fleet.edge_url]) as clients,
        httpx.AsyncClient(timeout=30) as client,
    ):
        workers = [task for c in clients for task in await load.run(c, workers=1)]
        try:
            assert subscribers(fleet) == len(serves)
            await asyncio.sleep(1)
            for _ in range(6):
                await watch.write(client, "steady")
            limited = await rate_limit_is_exact(fleet)

            load.phase = "replica lagging"
            await asyncio.to_thread(pair.pause_replay)
            for _ in range(4):
                await watch.write(client, load.phase)
            seen_lagging_s = await read_only_spell(fleet, load, client, ("lagging",))
            await asyncio.to_thread(pair.resume_replay)

            load.phase = "replica down"
            await asyncio.to_thread(pair.kill_replica)
            for _ in range(4):
                await watch.write(client, load.phase)
            seen_down_s = await read_only_spell(fleet, load, client, ("down", "failover"))
            await asyncio.to_thread(pair.start_replica)
            await asyncio.to_thread(pair.wait_caught_up)

            load.phase = "redis down"
            await asyncio.to_thread(fleet.redis.kill)
            await asyncio.sleep(3)
            load.phase = "redis back"
            await asyncio.to_thread(fleet.redis.start)
            restarted = time.monotonic()
            # Invalidation resumes: every serve subscribes to the restarted Redis again.
            await asyncio.to_thread(
                wait_for, lambda: subscribers(fleet) == len(serves), "resubscribed", 30
            )
            resubscribed_s = round(time.monotonic() - restarted, 1)
            for _ in range(4):
                await watch.write(client, load.phase)

            load.phase = "leader killed"
            takeover = await leader_killed(fleet)
            for _ in range(2):
                await watch.write(client, load.phase)
        finally:
            await load.stop(workers)
    routes = await asyncio.to_thread(read_routes, fleet)
    problems = await asyncio.to_thread(ledger_problems, fleet.url, fleet.catalog)
    fives = [o for counts in load.outcomes.values() for o in counts if o[1] >= 500]
    print(
        "\nfleet:",
        {
            "max_visibility_s": round(watch.max_latency(), 3),
            "max_visibility_s_by_phase": {
                phase: round(watch.max_latency(phase), 3) for phase in watch.latencies
            },
            "writes_watched": watch.writes,
            "requests": {phase: sum(c.values()) for phase, c in load.outcomes.items()},
            "rate_limit_probe": limited,
            "read_routes": routes,
            "replica_seen_lagging_after_s": seen_lagging_s,
            "replica_seen_down_after_s": seen_down_s,
            "takeover": takeover,
            "resubscribed_after_redis_restart_s": resubscribed_s,
            "5xx": fives,
            "ledger_problems": problems,
        },
    )
    assert fives == []
    assert all(load.total(phase, kind="purchase", status=201) > 0 for phase in load.outcomes)
    assert watch.max_latency() <= VISIBLE_WITHIN_S, watch.latencies
    assert routes.get("replica", 0) > 0  # the replica did serve public reads
    assert problems == []


async def read_only_spell(
    fleet: Fleet, load: MixedLoad, client: httpx.AsyncClient, routes: tuple[str, ...]
) -> float:
    """No writes for longer than the read-your-writes window, then pages never read before
    from each live serve (each a database read, routed by the replica's state alone) until
    the serves count a read sent to the primary for one of `routes`: how long that took from
    the spell's start. Every read is served: the replica, lagging or down, costs no 5xx."""
    before = await asyncio.to_thread(routed, fleet, routes)
    load.purchasing = False
    started = time.monotonic()
    try:
        await asyncio.sleep(READ_YOUR_WRITES_S + 1.0)
        while True:
            for serve in fleet.serves.values():
                if serve.process.poll() is None:
                    response = await client.get(f"{serve.url}/products/{fleet.cold.pop()}")
                    assert response.status_code == 200, (serve.url, response.text)
            if await asyncio.to_thread(routed, fleet, routes) > before:
                return round(time.monotonic() - started, 1)
            if time.monotonic() - started > SPELL_LIMIT_S:
                raise AssertionError(f"no read routed for {routes} within {SPELL_LIMIT_S} s")
            await asyncio.sleep(0.2)
    finally:
        load.purchasing = True


def routed(fleet: Fleet, routes: tuple[str, ...]) -> float:
    found = read_routes(fleet)
    return sum(found.get(route, 0) for route in routes)


def read_routes(fleet: Fleet) -> dict[str, float]:
    """Where the live serves' public-page loads went (replica, or the primary and why)."""
    routes: Counter[str] = Counter()
    for serve in fleet.serves.values():
        if serve.process.poll() is None:
            for family in text_string_to_metric_families(scrape(serve).text):
                for sample in family.samples:
                    if sample.name == "edgemart_read_routes_total":
                        routes[sample.labels["route"]] += sample.value
    return dict(routes)


def subscribers(fleet: Fleet) -> int:
    """How many processes listen on the invalidation channel of the fleet's Redis (0 while it
    is down)."""
    client = redis.Redis(port=fleet.redis.port, socket_timeout=2)
    try:
        channels = client.pubsub_channels()
        return max((n for _, n in client.pubsub_numsub(*channels)), default=0)
    except redis.ConnectionError:
        return 0
    finally:
        client.close()


class AsyncClients:
    """One client per base URL, opened and closed together."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]

    async def __aenter__(self) -> list[httpx.AsyncClient]:
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.aclose()


async def leader_killed(fleet: Fleet) -> dict[str, float]:
    """SIGKILL the leader; a standby runs the job within TAKEOVER_WITHIN_S, and from then on
    once per period, alone."""
    serves = fleet.serves
    [leader] = tenures(serves)
    assert leader.serve == fleet.leader
    killed_at = time.time()
    os.kill(leader.pid, signal.SIGKILL)
    await asyncio.to_thread(serves[leader.serve].process.wait)

    def taken_over() -> bool:
        return any(run.term > leader.term for run in runs(serves))

    await asyncio.to_thread(wait_for, taken_over, "a standby's first run", TAKEOVER_WITHIN_S + 5)
    first = next(run for run in runs(serves) if run.term > leader.term)
    await asyncio.sleep(3 * EVERY_S)
    after = runs(serves)
    assert first.at - killed_at < TAKEOVER_WITHIN_S
    assert {run.term for run in after if run.at > killed_at} == {first.term}
    assert {run.serve for run in after if run.term == first.term} == {first.serve}
    assert_once_per_period(after, EVERY_S)
    return {"first_run_after_kill_s": round(first.at - killed_at, 1)}

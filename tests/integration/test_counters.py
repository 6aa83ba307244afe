"""Buffered counters on the real Redis, one Redis client per process, entries that cannot be
forged or split, and batch writes that isolate the entries the database refuses."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import psycopg
import pytest
from psycopg.rows import dict_row

from edgemart import metrics
from edgemart.counters import (
    Dropped,
    HistoryEntry,
    MemoryCounts,
    RedisCounts,
    SearchCount,
    buffer_name,
    check_entries,
    client_hash,
    flush_blocking,
    history_entry,
    parse_history,
    parse_search_count,
    parse_view_count,
    search_count_entry,
)
from edgemart.db import Connection
from edgemart.isolation import write_isolating
from edgemart.redisclient import LazyRedis
from edgemart.services import Services
from tests.conftest import RedisProcess, settings_for

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_record_drain_restore(kind: str, redis_url: str) -> None:
    redis = LazyRedis(redis_url)
    counts = (
        RedisCounts(redis, f"edgemart-test:{uuid.uuid4().hex}")
        if kind == "redis"
        else (MemoryCounts())
    )
    try:
        for name in ("lamp", "lamp", "rug"):
            await counts.record(name)
        drained = await counts.drain()
        assert drained == {"lamp": 2, "rug": 1}
        assert await counts.drain() == {}  # drained exactly once
        await counts.restore(drained)
        await counts.record("lamp")
        assert await counts.drain() == {"lamp": 3, "rug": 1}
    finally:
        await counts.aclose()
        await redis.aclose()


async def test_limiter_and_counters_share_one_client(redis_url: str) -> None:
    services = Services.from_settings(settings_for(None, redis_url=redis_url))
    try:
        limiter_redis = services.rate_limiter.shared.redis  # type: ignore[attr-defined]
        counter_clients = {
            id(buffer.redis)  # type: ignore[attr-defined]
            for buffer in (services.search_counts, services.view_counts, services.search_history)
        }
        assert counter_clients == {id(limiter_redis)}
    finally:
        await services.aclose()


async def test_redis_down_keeps_counts_and_delivers_them_when_back(
    own_redis: RedisProcess,
) -> None:
    redis = LazyRedis(own_redis.url)
    # A generous timeout: a busy machine must not turn a slow first connection into a
    # failure; a stopped server refuses connections at once anyway.
    counts = RedisCounts(
        redis, "edgemart-test:views", timeout_s=2.0, retry_after_s=0.0, flush_every_s=3600
    )
    before = metrics.count(metrics.COUNTER_FALLBACKS, buffer="views")
    try:
        own_redis.kill()
        for name in ("lamp", "lamp", "rug"):
            await counts.record(name)  # never raises, never touches Redis
        await counts.flush()  # fails: kept in this process
        assert counts.pending == {"lamp": 2, "rug": 1}
        assert metrics.count(metrics.COUNTER_FALLBACKS, buffer="views") == before + 2
        own_redis.start()
        await counts.record("rug")
        await counts.flush()
        assert counts.pending == {}
        stored = await redis.client().hgetall("edgemart-test:views")
        assert stored == {b"lamp": b"2", b"rug": b"2"}
        assert await counts.drain() == {"lamp": 2, "rug": 2}
    finally:
        await counts.aclose()


async def test_redis_down_at_drain_returns_what_this_process_holds(
    own_redis: RedisProcess,
) -> None:
    redis = LazyRedis(own_redis.url)
    counts = RedisCounts(redis, "edgemart-test:views", timeout_s=2.0, retry_after_s=0.0)
    try:
        own_redis.kill()
        for name in ("lamp", "rug"):
            await counts.record(name)
        assert await counts.drain() == {"lamp": 1, "rug": 1}
        await counts.restore({"rug": 1})  # a failed database flush, Redis still down: kept
        assert counts.pending == {"rug": 1}
        own_redis.start()
        await counts.record("lamp")
        assert await counts.drain() == {"lamp": 1, "rug": 1}
    finally:
        await counts.aclose()


async def test_pending_entries_are_bounded_while_redis_is_down(own_redis: RedisProcess) -> None:
    redis = LazyRedis(own_redis.url)
    counts = RedisCounts(
        redis, "edgemart-test:views", retry_after_s=0.0, flush_every_s=3600, max_entries=2
    )
    before = metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="views")
    try:
        own_redis.kill()
        for name in ("lamp", "rug", "mat", "lamp", "vase"):
            await counts.record(name)
        await counts.flush()
        assert counts.pending == {"lamp": 2, "rug": 1}
        assert metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="views") == before + 2
    finally:
        own_redis.start()
        await counts.aclose()


async def test_record_does_no_io_and_the_flusher_writes_within_the_interval(
    redis_url: str,
) -> None:
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = RedisCounts(redis, key, flush_every_s=0.05)
    try:
        for name in ("lamp", "lamp", "rug"):
            await counts.record(name)
        assert await redis.client().exists(key) == 0  # nothing written on the request path
        async with asyncio.timeout(10):  # the interval, with room for a busy machine
            while await redis.client().hgetall(key) != {b"lamp": b"2", b"rug": b"1"}:
                await asyncio.sleep(0.01)
        assert counts.pending == {}
    finally:
        await counts.aclose()
        await redis.client().delete(key)
        await redis.aclose()


class SwallowingCounts(RedisCounts):
    """Counts whose flush turns a cancellation into an ordinary failure once, as a library
    under `flush` may (the CI hang: the flusher went on running, and `aclose` waited for it)."""

    swallowed = 0

    async def flush(self) -> None:
        try:
            await asyncio.sleep(0.2)  # "writing to Redis" when the cancellation comes
        except asyncio.CancelledError:
            self.swallowed += 1
        await super().flush()


async def test_aclose_stops_a_flusher_that_swallowed_its_cancellation(redis_url: str) -> None:
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = SwallowingCounts(redis, key, flush_every_s=0.05)
    await counts.record("lamp")
    await asyncio.sleep(0.1)  # the flusher is inside its flush
    try:
        async with asyncio.timeout(5):
            await counts.aclose()
        assert counts.swallowed == 1
        assert await redis.client().hgetall(key) == {b"lamp": b"1"}
    finally:
        await redis.client().delete(key)
        await redis.aclose()


async def test_aclose_writes_what_is_pending(redis_url: str) -> None:
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = RedisCounts(redis, key, flush_every_s=3600)
    await counts.record("lamp")
    await counts.aclose()
    try:
        assert await redis.client().hgetall(key) == {b"lamp": b"1"}
    finally:
        await redis.client().delete(key)
        await redis.aclose()


async def test_drain_includes_this_process_s_pending_counts(redis_url: str) -> None:
    """Two processes on one key: each one's drain writes its own pending counts first; the
    other's, not yet flushed, stay with it."""
    key = f"edgemart-test:{uuid.uuid4().hex}"
    first = RedisCounts(LazyRedis(redis_url), key, flush_every_s=3600)
    second = RedisCounts(LazyRedis(redis_url), key, flush_every_s=3600)
    try:
        await first.record("lamp")
        await second.record("rug")
        assert await first.drain() == {"lamp": 1}
        assert await second.drain() == {"rug": 1}
    finally:
        await first.aclose()
        await second.aclose()


async def test_concurrent_records_and_flushes_lose_and_double_nothing(redis_url: str) -> None:
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = RedisCounts(redis, key, flush_every_s=0.001)
    names = [f"p{index % 7}" for index in range(2000)]

    async def recorder(part: list[str]) -> None:
        for name in part:
            await counts.record(name)
            await asyncio.sleep(0)  # let the flusher and the other recorders in

    async def flusher() -> None:
        for _ in range(50):
            await counts.flush()

    try:
        async with asyncio.TaskGroup() as group:
            for start in range(0, len(names), 250):
                group.create_task(recorder(names[start : start + 250]))
            group.create_task(flusher())
        assert await counts.drain() == dict(Counter(names))
    finally:
        await counts.aclose()


def test_flush_blocking_writes_on_the_loop_that_counted(redis_url: str) -> None:
    """A Lambda environment: the handler runs on one loop the runtime keeps (Mangum's, the
    job runner's); after it returns, the invocation's end writes the counts on that loop."""
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = RedisCounts(redis, key, flush_every_s=3600)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(counts.record("lamp"))
        assert counts.pending == {"lamp": 1}
        flush_blocking([counts, MemoryCounts()])
        assert counts.pending == {}

        async def stored() -> object:
            return await redis.client().hgetall(key)

        assert loop.run_until_complete(stored()) == {b"lamp": b"1"}
        assert loop.run_until_complete(counts.drain()) == {"lamp": 1}
    finally:
        loop.run_until_complete(counts.aclose())
        loop.close()


async def test_redis_drain_drops_fields_written_around_the_counter(redis_url: str) -> None:
    """Fields HINCRBY could never have written (not UTF-8, not an integer) are dropped and
    counted at the drain; the rest drain as usual."""
    redis = LazyRedis(redis_url)
    key = f"edgemart-test:{uuid.uuid4().hex}"
    counts = RedisCounts(redis, key)
    before = metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer=buffer_name(key))
    try:
        await counts.record("lamp")
        await redis.client().hset(
            key, mapping={b"\xff\xfe": b"1", b"rug": b"many", b"mat": b"1.5", b"ok": b"2"}
        )
        assert await counts.drain() == {"lamp": 1, "ok": 2}
        assert metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer=buffer_name(key)) == before + 3
        assert await redis.client().exists(key) == 0  # nothing left behind to fail again
    finally:
        await counts.aclose()


def test_multi_part_entries_are_json_and_never_split() -> None:
    """A subject holding the old separator stays one (refused) subject; an entry in the old
    `sub \\x1f query` form is no entry at all."""
    forged = history_entry("mallory\x1fvictim", "lamp")
    assert parse_history(forged, 1) == "user is not a token subject"
    assert parse_history("victim\x1flamp", 1) == "not a JSON [user, query] pair"
    assert parse_history(history_entry("alice", "  Oak  LAMP "), 1) == HistoryEntry(
        "alice", "oak lamp"
    )
    client = client_hash(None, "198.51.100.1", "s")
    assert client is not None
    assert parse_search_count(search_count_entry("Lamp", client), 1) == SearchCount("lamp", client)
    for bad in ('["lamp"]', '["lamp", 1]', "[" * 5000, "lamp", '{"q": "lamp"}'):
        assert isinstance(parse_search_count(bad, 1), str), bad
    assert parse_search_count(search_count_entry("lamp", "not-a-hash"), 1) == (
        "client is not a client hash"
    )
    assert parse_view_count(str(uuid.UUID(int=1)), 3) is not None
    for name, count in (("{" + str(uuid.UUID(int=1)) + "}", 1), (str(uuid.UUID(int=1)), 0)):
        assert isinstance(parse_view_count(name, count), str), name
    assert isinstance(parse_view_count(str(uuid.UUID(int=1)), 2**63), str)


def test_check_entries_drops_and_counts_what_fails() -> None:
    dropped = Dropped("search_history")
    before = metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="search_history")
    good = history_entry("alice", "lamp")
    checked = check_entries(
        {good: 1, "alice\x1flamp": 1, history_entry("a\x00", "x"): 1}, parse_history, dropped
    )
    assert checked == {good: HistoryEntry("alice", "lamp")}
    assert (
        dropped.count == 2
        and metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="search_history") == before + 2
    )


def test_client_hash_is_keyed_and_hides_the_address() -> None:
    ip_hash = client_hash(None, "203.0.113.9", "secret")
    assert ip_hash is not None and len(ip_hash) == 32 and "203" not in ip_hash
    assert ip_hash == client_hash(None, "203.0.113.9", "secret")  # same client, same hash
    assert ip_hash != client_hash(None, "203.0.113.10", "secret")
    assert ip_hash != client_hash(None, "203.0.113.9", "another secret")
    # A signed-in client is its subject, wherever it comes from.
    assert client_hash("alice", "203.0.113.9", "secret") == client_hash("alice", None, "secret")
    assert client_hash("alice", None, "secret") != ip_hash
    assert client_hash(None, None, "secret") is None


async def test_write_isolating_drops_only_the_refused_entries(migrated_database_url: str) -> None:
    """The database refuses 3 of 200 values (a CHECK, a range, an unencodable string): the
    batch is bisected, the other 197 are written, each refused one is reported once."""
    values: list[object] = [str(n) for n in range(1, 201)]
    values[7], values[100], values[150] = "-5", str(2**40), "x\ud800"
    refused: list[object] = []
    statements = 0

    async def write(conn: Connection, batch: Sequence[object]) -> None:
        nonlocal statements
        statements += 1
        await conn.execute("INSERT INTO isolated (n) SELECT unnest(%s::text[])::int", [batch])

    conn = await psycopg.AsyncConnection.connect(
        migrated_database_url, autocommit=True, row_factory=dict_row
    )
    try:
        await conn.execute("CREATE TABLE isolated (n integer CHECK (n > 0))")
        async with conn.transaction():
            written = await write_isolating(
                conn, values, write, lambda value, exc: refused.append(value)
            )
        rows = await (await conn.execute("SELECT count(*) AS n FROM isolated")).fetchone()
    finally:
        await conn.close()
    assert written == 197 and rows == {"n": 197}
    assert sorted(map(str, refused)) == sorted(["-5", str(2**40), "x\ud800"])
    assert statements < 60  # bisected, not one statement per value

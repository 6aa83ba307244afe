"""Buffered counters (search queries, product views, signed-in users' search history):
counted in memory or Redis, never with a database write per request; refresh_views drains
them and writes each kind in one statement (`flush_search_counts`, `flush_view_counts`,
`flush_search_history`).

`popular_searches` keeps a running total and two period counts (`current_count`,
`previous_count`); a query is *trending* when its current period clearly beats the previous
one. Periods are `SEARCH_TRENDING_PERIOD_S` long (default one hour), aligned to the epoch.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Protocol

from edgemart import metrics
from edgemart.logging import ThrottledWarning

if TYPE_CHECKING:
    from edgemart.db import Connection
    from edgemart.redisclient import LazyRedis

_SPACES = re.compile(r"\s+")
SEARCH_COUNTS_KEY = "edgemart:search_counts"
VIEW_COUNTS_KEY = "edgemart:view_counts"
SEARCH_HISTORY_KEY = "edgemart:search_history"
HISTORY_SEPARATOR = "\x1f"  # unit separator: cannot occur in a JWT subject or a search
SEARCH_HISTORY_PER_USER = 50
COUNTER_FALLBACK_METRIC = "counter_fallback"

# Atomically read and clear the hash, so a count is flushed exactly once.
_DRAIN_SCRIPT = """
local counts = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return counts
"""


def normalise_query(query: str) -> str:
    return _SPACES.sub(" ", query.strip().lower())[:200]


class BufferedCounts(Protocol):
    async def record(self, name: str) -> None: ...

    async def drain(self) -> dict[str, int]:
        """Every count recorded since the last drain, removed from the buffer."""
        ...

    async def restore(self, counts: dict[str, int]) -> None:
        """Put drained counts back (their flush failed), so nothing is lost."""
        ...

    async def aclose(self) -> None: ...


class MemoryCounts:
    """Per process: in Lambda, only the process that counted can flush (see README)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    async def record(self, name: str) -> None:
        self._counts[name] += 1

    async def drain(self) -> dict[str, int]:
        counts, self._counts = self._counts, Counter()
        return dict(counts)

    async def restore(self, counts: dict[str, int]) -> None:
        self._counts.update(counts)

    async def aclose(self) -> None:
        self._counts.clear()


class RedisCounts:
    """Shared across processes: one HINCRBY per event, drained by a Lua script.

    Counting is never worth failing a request for: if Redis errors or does not answer within
    `timeout_s`, the event is counted in this process instead (metric `counter_fallback`,
    logged at most once a minute) and Redis is skipped for `retry_after_s`. `drain` returns
    the local counts too, so the next flush writes them; counts Redis holds while it cannot
    be drained stay there for a later flush. Nothing is lost unless Redis itself loses it."""

    def __init__(
        self,
        redis: LazyRedis,
        key: str,
        *,
        timeout_s: float = 0.05,
        retry_after_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.key = key
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.local = MemoryCounts()
        self._skip_redis_until = 0.0
        self._failures = ThrottledWarning(
            f"counting in Redis ({key}) failed (%r); counting in this process"
        )

    async def record(self, name: str) -> None:
        if time.monotonic() >= self._skip_redis_until:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.redis.client().hincrby(self.key, name, 1)
                return
            except Exception as exc:  # any Redis failure: count locally instead
                self._redis_failed(exc)
        metrics.increment(COUNTER_FALLBACK_METRIC)
        await self.local.record(name)

    async def drain(self) -> dict[str, int]:
        counts = Counter(await self.local.drain())
        try:
            flat = await self.redis.client().eval(_DRAIN_SCRIPT, 1, self.key)
        except Exception as exc:  # Redis down: flush what this process holds now
            self._redis_failed(exc)
            return dict(counts)
        for index in range(0, len(flat), 2):
            counts[flat[index].decode()] += int(flat[index + 1])
        return dict(counts)

    async def restore(self, counts: dict[str, int]) -> None:
        if not counts:
            return
        try:
            async with self.redis.client().pipeline(transaction=False) as pipe:
                for query, count in counts.items():
                    pipe.hincrby(self.key, query, count)
                await pipe.execute()
        except Exception as exc:  # kept in this process for the next flush instead
            self._redis_failed(exc)
            await self.local.restore(counts)

    def _redis_failed(self, exc: BaseException) -> None:
        self._skip_redis_until = time.monotonic() + self.retry_after_s
        self._failures.note(exc)

    async def aclose(self) -> None:
        await self.redis.aclose()


ROTATE_SQL = b"""
UPDATE popular_searches
SET previous_count = CASE WHEN now() - period_start < 2 * %(period)s::interval
                          THEN current_count ELSE 0 END,
    current_count = 0,
    period_start = date_bin(%(period)s::interval, now(), 'epoch'),
    updated_at = now()
WHERE now() - period_start >= %(period)s::interval
"""

UPSERT_SQL = b"""
INSERT INTO popular_searches (query, total_count, current_count, period_start)
SELECT query, n, n, date_bin(%(period)s::interval, now(), 'epoch')
FROM unnest(%(queries)s::text[], %(counts)s::bigint[]) AS flushed(query, n)
ON CONFLICT (query) DO UPDATE
SET total_count = popular_searches.total_count + excluded.total_count,
    current_count = popular_searches.current_count + excluded.current_count,
    updated_at = now()
"""


async def flush_search_counts(conn: Connection, counts: dict[str, int], period_s: int) -> int:
    """Rotate expired periods, then add `counts`; returns how many queries were written."""
    period = f"{period_s} seconds"
    await conn.execute(ROTATE_SQL, {"period": period})
    if counts:
        queries = sorted(counts)
        await conn.execute(
            UPSERT_SQL,
            {"period": period, "queries": queries, "counts": [counts[q] for q in queries]},
        )
    return len(counts)


VIEWS_SQL = b"""
UPDATE products SET view_count = view_count + viewed.n
FROM unnest(%s::uuid[], %s::bigint[]) AS viewed(id, n)
WHERE products.id = viewed.id
"""


async def flush_view_counts(conn: Connection, counts: dict[str, int]) -> int:
    if counts:
        ids = sorted(counts)  # a stable order: concurrent flushes lock rows alike
        await conn.execute(VIEWS_SQL, [ids, [counts[i] for i in ids]])
    return len(counts)


def buffered_counts(redis: LazyRedis | None, key: str) -> BufferedCounts:
    return RedisCounts(redis, key) if redis is not None else MemoryCounts()


def history_entry(user_sub: str, query: str) -> str:
    return f"{user_sub}{HISTORY_SEPARATOR}{normalise_query(query)}"


HISTORY_INSERT_SQL = b"""
INSERT INTO search_history (user_sub, query)
SELECT user_sub, query FROM unnest(%s::text[], %s::text[]) AS searched(user_sub, query)
"""

HISTORY_TRIM_SQL = b"""
DELETE FROM search_history h USING (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY user_sub ORDER BY created_at DESC, id DESC)
               AS newest_first
        FROM search_history WHERE user_sub = ANY(%s::text[])
    ) ranked WHERE newest_first > %s
) old WHERE h.id = old.id
"""


async def flush_search_history(
    conn: Connection, entries: dict[str, int], keep_per_user: int = SEARCH_HISTORY_PER_USER
) -> int:
    """Record each (user, query) searched since the last flush once, then keep only each
    user's newest `keep_per_user` rows."""
    pairs = sorted(
        entry.split(HISTORY_SEPARATOR, 1) for entry in entries if HISTORY_SEPARATOR in entry
    )
    if not pairs:
        return 0
    users = [user for user, _ in pairs]
    await conn.execute(HISTORY_INSERT_SQL, [users, [query for _, query in pairs]])
    await conn.execute(HISTORY_TRIM_SQL, [sorted(set(users)), keep_per_user])
    return len(pairs)

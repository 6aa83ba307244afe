"""Buffered counters (search queries, product views, signed-in users' search history):
counted in memory or Redis, never with a database write per request; refresh_views drains
them, checks every entry in Python, and writes each kind in one statement per batch
(`flush_search_counts`, `flush_view_counts`, `flush_search_history`).

A buffer maps an entry to a count. An entry built from several parts (a query and the client
that searched it; a user and a query) is a JSON array, never parts joined by a separator:
user input cannot then move a part into another. Entries are decoded defensively: one that
does not decode, or fails its check, is dropped (logged, counted in `counter_entries_dropped`),
as is one the database refuses (`edgemart.isolation`); neither goes back into the buffer.

`popular_searches` counts *clients*, not requests: a query counts once per client per period
(`SEARCH_TRENDING_PERIOD_S`, aligned to the epoch), deduplicated across flushes by
`popular_search_clients` (query, client hash, period). `current_count` and `previous_count`
are the distinct clients of the two most recent periods, `total_count` their sum over every
period, `peak_clients` the most in any one period; a query is *trending* when its current
period clearly beats the previous one. A client is the token subject of an authenticated
search, else its IP address, stored only as a keyed hash (`client_hash`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from edgemart import metrics
from edgemart.backoff import Backoff
from edgemart.isolation import write_isolating
from edgemart.logging import logger
from edgemart.validation import is_clean_identifier, text_problem

if TYPE_CHECKING:
    from edgemart.db import Connection
    from edgemart.redisclient import LazyRedis

T = TypeVar("T")
_SPACES = re.compile(r"\s+")
SEARCH_COUNTS_KEY = "edgemart:search_counts"
VIEW_COUNTS_KEY = "edgemart:view_counts"
SEARCH_HISTORY_KEY = "edgemart:search_history"
SEARCH_HISTORY_PER_USER = 50
MAX_QUERY_LENGTH = 200
MAX_SUBJECT_LENGTH = 255
BIGINT_MAX = 2**63 - 1
LOGGED_DROPS = 20  # per buffer and flush; the rest are only counted

# Atomically read and clear the hash, so a count is flushed exactly once.
_DRAIN_SCRIPT = """
local counts = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return counts
"""


def normalise_query(query: str) -> str:
    return _SPACES.sub(" ", query.strip().lower())[:MAX_QUERY_LENGTH]


def buffer_name(key: str) -> str:
    """A buffer's name in metrics: its Redis key without the `edgemart:` prefix."""
    return key.rpartition(":")[2]


class Dropped:
    """The entries of one buffer one flush drops: each counted in `counter_entries_dropped`,
    the first `LOGGED_DROPS` logged with their (shortened) repr and the reason."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0
        self._entries: set[object] = set()
        self._counted = metrics.series(metrics.COUNTER_ENTRIES_DROPPED, buffer=buffer_name(kind))

    def __contains__(self, entry: object) -> bool:
        return entry in self._entries

    def __call__(self, entry: object, reason: str) -> None:
        self.count += 1
        self._entries.add(entry)
        self._counted.add()
        if self.count <= LOGGED_DROPS:
            logger.warning("%s: dropped buffered entry %r: %s", self.kind, _short(entry), reason)

    def refused(self, entry: object, exc: BaseException) -> None:
        """An entry the database refused (`edgemart.isolation.write_isolating`)."""
        self(entry, f"refused by the database ({type(exc).__name__})")


def _short(entry: object) -> object:
    if isinstance(entry, str | bytes) and len(entry) > 120:
        return entry[:120]
    return entry


class BufferedCounts(Protocol):
    async def record(self, name: str) -> None: ...

    async def drain(self) -> dict[str, int]:
        """Every count recorded since the last drain, removed from the buffer."""
        ...

    async def restore(self, counts: dict[str, int]) -> None:
        """Put drained counts back (their flush could not reach the database)."""
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
    `timeout_s`, the event is counted in this process instead (metric `counter_fallbacks`,
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
        self.local = MemoryCounts()
        self._fallbacks = metrics.series(metrics.COUNTER_FALLBACKS, buffer=buffer_name(key))
        self.backoff = Backoff(
            f"counting in Redis ({key}) failed (%r); counting in this process",
            retry_after_s=retry_after_s,
        )

    async def record(self, name: str) -> None:
        if self.backoff.ready():
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.redis.client().hincrby(self.key, name, 1)
                return
            except Exception as exc:  # any Redis failure: count locally instead
                self.backoff.failed(exc)
        self._fallbacks.add()
        await self.local.record(name)

    async def drain(self) -> dict[str, int]:
        counts = Counter(await self.local.drain())
        try:
            flat = await self.redis.client().eval(_DRAIN_SCRIPT, 1, self.key)
        except Exception as exc:  # Redis down: flush what this process holds now
            self.backoff.failed(exc)
            return dict(counts)
        dropped = Dropped(self.key)
        for index in range(0, len(flat), 2):
            name, value = flat[index], flat[index + 1]
            try:
                counts[name.decode()] += int(value)
            except ValueError:  # not UTF-8, or not an integer: written around HINCRBY
                dropped(name, f"not a UTF-8 name with an integer count ({value[:40]!r})")
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
            self.backoff.failed(exc)
            await self.local.restore(counts)

    async def aclose(self) -> None:
        await self.redis.aclose()


def buffered_counts(redis: LazyRedis | None, key: str) -> BufferedCounts:
    return RedisCounts(redis, key) if redis is not None else MemoryCounts()


# --- Entries: what a request records, and the checks a flush makes before writing ---

CLIENT_HASH = re.compile(r"[0-9a-f]{32}")
_CLIENT_KEY_LABEL = b"edgemart popular-search clients"


@functools.cache
def _client_key(secret: str | None) -> bytes:
    return hmac.new((secret or "").encode(), _CLIENT_KEY_LABEL, hashlib.sha256).digest()


def client_hash(sub: str | None, ip: str | None, secret: str | None) -> str | None:
    """Who searched, as 128 bits of HMAC-SHA256 keyed from `secret` (CURSOR_SECRET): the
    token subject when the search was authenticated, else the IP address; None when neither
    is known. The raw address is never stored."""
    if sub is not None:
        identity = "sub:" + sub
    elif ip is not None:
        identity = "ip:" + ip
    else:
        return None
    data = identity.encode("utf-8", "surrogatepass")
    return hmac.new(_client_key(secret), data, hashlib.sha256).hexdigest()[:32]


def search_count_entry(query: str, client: str) -> str:
    return json.dumps([normalise_query(query), client])


def history_entry(user_sub: str, query: str) -> str:
    return json.dumps([user_sub, normalise_query(query)])


@dataclass(frozen=True, slots=True, order=True)
class SearchCount:
    query: str
    client: str


@dataclass(frozen=True, slots=True, order=True)
class ViewCount:
    product_id: str
    count: int


@dataclass(frozen=True, slots=True, order=True)
class HistoryEntry:
    user_sub: str
    query: str


def _pair(name: str) -> tuple[str, str] | None:
    try:
        value = json.loads(name)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can parse
        return None
    if isinstance(value, list) and len(value) == 2:
        first, second = value
        if isinstance(first, str) and isinstance(second, str):
            return first, second
    return None


def _query_problem(query: str) -> str | None:
    if not 1 <= len(query) <= MAX_QUERY_LENGTH:
        return f"query must be 1 to {MAX_QUERY_LENGTH} characters"
    problem = text_problem(query)
    if problem is not None:
        return f"query {problem}"
    if normalise_query(query) != query:
        return "query is not normalised"
    return None


def _count_problem(count: object) -> str | None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= BIGINT_MAX:
        return f"count {_short(repr(count))} is not a positive 64-bit integer"
    return None


def parse_search_count(name: str, count: int) -> SearchCount | str:
    """The entry, or why it is not one (pure)."""
    pair = _pair(name)
    if pair is None:
        return "not a JSON [query, client] pair"
    query, client = pair
    problem = _query_problem(query) or _count_problem(count)
    if problem is not None:
        return problem
    if not CLIENT_HASH.fullmatch(client):
        return "client is not a client hash"
    return SearchCount(query, client)


def parse_view_count(name: str, count: int) -> ViewCount | str:
    try:
        canonical = str(uuid.UUID(name))
    except ValueError:
        canonical = None
    if canonical != name:
        return "not a product id (a UUID in canonical form)"
    return _count_problem(count) or ViewCount(name, count)


def parse_history(name: str, count: int) -> HistoryEntry | str:
    pair = _pair(name)
    if pair is None:
        return "not a JSON [user, query] pair"
    user_sub, query = pair
    if not 1 <= len(user_sub) <= MAX_SUBJECT_LENGTH or not is_clean_identifier(user_sub):
        return "user is not a token subject"
    return _query_problem(query) or _count_problem(count) or HistoryEntry(user_sub, query)


def check_entries(
    drained: dict[str, int], parse: Callable[[str, int], T | str], dropped: Dropped
) -> dict[str, T]:
    """The drained entries that pass `parse`, by buffer name; the others are dropped."""
    checked: dict[str, T] = {}
    for name, count in drained.items():
        result = parse(name, count)
        if isinstance(result, str):
            dropped(name, result)
        else:
            checked[name] = result
    return checked


# --- Flushes: each writes checked entries inside the caller's transaction ---

ROTATE_SQL = b"""
UPDATE popular_searches
SET previous_count = CASE WHEN now() - period_start < 2 * %(period)s::interval
                          THEN current_count ELSE 0 END,
    current_count = 0,
    period_start = date_bin(%(period)s::interval, now(), 'epoch'),
    updated_at = now()
WHERE now() - period_start >= %(period)s::interval
"""

# Only the current period's clients are needed to deduplicate.
PRUNE_CLIENTS_SQL = b"""
DELETE FROM popular_search_clients
WHERE period_start < date_bin(%(period)s::interval, now(), 'epoch')
"""

# A (query, client) pair already counted this period inserts nothing and adds nothing.
COUNT_CLIENTS_SQL = b"""
WITH counted AS (
    INSERT INTO popular_search_clients (period_start, query, client_hash)
    SELECT date_bin(%(period)s::interval, now(), 'epoch'), query, client
    FROM unnest(%(queries)s::text[], %(clients)s::text[]) AS flushed(query, client)
    ON CONFLICT DO NOTHING
    RETURNING query
), added AS (
    SELECT query, count(*) AS n FROM counted GROUP BY query
)
INSERT INTO popular_searches AS p (query, total_count, current_count, peak_clients, period_start)
SELECT query, n, n, n, date_bin(%(period)s::interval, now(), 'epoch') FROM added
ON CONFLICT (query) DO UPDATE
SET total_count = p.total_count + excluded.total_count,
    current_count = p.current_count + excluded.current_count,
    peak_clients = greatest(p.peak_clients, p.current_count + excluded.current_count),
    updated_at = now()
"""


async def flush_search_counts(
    conn: Connection, entries: Sequence[SearchCount], period_s: int, dropped: Dropped
) -> int:
    """Rotate expired periods, forget the clients of past ones, then count each entry's
    client once per period; returns how many entries were written."""
    period = f"{period_s} seconds"
    await conn.execute(ROTATE_SQL, {"period": period})
    await conn.execute(PRUNE_CLIENTS_SQL, {"period": period})

    async def write(conn: Connection, batch: Sequence[SearchCount]) -> None:
        await conn.execute(
            COUNT_CLIENTS_SQL,
            {
                "period": period,
                "queries": [entry.query for entry in batch],
                "clients": [entry.client for entry in batch],
            },
        )

    # Sorted: concurrent writers (should the step lock ever be bypassed) lock rows alike.
    return await write_isolating(conn, sorted(set(entries)), write, dropped.refused)


VIEWS_SQL = b"""
UPDATE products SET view_count = view_count + viewed.n
FROM unnest(%s::uuid[], %s::bigint[]) AS viewed(id, n)
WHERE products.id = viewed.id
RETURNING products.id::text AS id
"""


async def flush_view_counts(
    conn: Connection, entries: Sequence[ViewCount], dropped: Dropped
) -> int:
    """Add the views; an id that matches no product is dropped. Returns the products
    updated."""
    found: set[str] = set()

    async def write(conn: Connection, batch: Sequence[ViewCount]) -> None:
        cursor = await conn.execute(
            VIEWS_SQL, [[entry.product_id for entry in batch], [entry.count for entry in batch]]
        )
        found.update(row["id"] for row in await cursor.fetchall())

    ordered = sorted(entries)  # a stable order: concurrent flushes lock rows alike
    await write_isolating(conn, ordered, write, dropped.refused)
    for entry in ordered:
        if entry.product_id not in found and entry not in dropped:
            dropped(entry, "no such product")
    return len(found)


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
    conn: Connection,
    entries: Sequence[HistoryEntry],
    dropped: Dropped,
    keep_per_user: int = SEARCH_HISTORY_PER_USER,
) -> int:
    """Record each (user, query) searched since the last flush once, then keep only each
    user's newest `keep_per_user` rows."""
    users: set[str] = set()

    async def write(conn: Connection, batch: Sequence[HistoryEntry]) -> None:
        await conn.execute(
            HISTORY_INSERT_SQL,
            [[entry.user_sub for entry in batch], [entry.query for entry in batch]],
        )
        users.update(entry.user_sub for entry in batch)

    written = await write_isolating(conn, sorted(set(entries)), write, dropped.refused)
    if users:
        await conn.execute(HISTORY_TRIM_SQL, [sorted(users), keep_per_user])
    return written

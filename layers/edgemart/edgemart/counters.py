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

Every count is its tenant's (docs/decisions/0040): an entry of another tenant than `default`
names it (a third JSON element; `tenant:product` for a view), so `default`'s entries, and a
single-tenant install's buffers, read exactly as before. A flush writes each tenant's entries
in that tenant's transaction.
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
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from edgemart import metrics
from edgemart.backoff import Backoff
from edgemart.isolation import write_isolating
from edgemart.logging import logger
from edgemart.tenancy import DEFAULT_TENANT_ID
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

    def flush_blocking(self) -> None:
        """At the end of a Lambda invocation: write what is held for a shared store there."""
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

    def flush_blocking(self) -> None:
        """Nothing to write: the counts live in this process until they are drained."""

    async def aclose(self) -> None:
        self._counts.clear()


MAX_PENDING_ENTRIES = 100_000
"""Distinct entries a process holds for Redis at most (while Redis is down); more are dropped."""


def merge_pending(pending: Counter[str], counts: dict[str, int], cap: int) -> int:
    """Add `counts` into `pending` (pure): an entry already held is added to; a new one only
    while `pending` holds fewer than `cap` entries. Returns how many entries were dropped."""
    dropped = 0
    for name, count in counts.items():
        if name in pending or len(pending) < cap:
            pending[name] += count
        else:
            dropped += 1
    return dropped


@dataclass(eq=False, repr=False)
class RedisCounts:
    """Shared across processes: counted in this process, written to Redis in batches (one
    pipeline of HINCRBYs), drained by a Lua script.

    `record` only adds to an in-memory Counter: no Redis round trip on the request path. The
    pending counts are written by a background flusher about every `flush_every_s` (started
    on the first record on the running loop: a test's new loop, or a Lambda environment's one
    loop, gets its own), by `flush_blocking` at the end of a Lambda invocation, by `drain`
    before it reads the hash (a process that counts and drains sees its own counts) and by
    `aclose`. A SIGKILLed process loses at most one interval of counts (decision 0039).

    If Redis errors or does not answer within `timeout_s`, the counts stay pending (metric
    `counter_fallbacks`, logged at most once a minute) and Redis is skipped for
    `retry_after_s`; at most `max_entries` distinct entries are held, the others dropped
    (counted in `counter_entries_dropped`). `drain` returns what could not be written, so
    the next database flush writes it."""

    redis: LazyRedis
    key: str
    _: KW_ONLY
    timeout_s: float = 1.0
    retry_after_s: InitVar[float] = 1.0
    flush_every_s: float = 1.0
    max_entries: int = MAX_PENDING_ENTRIES
    _pending: Counter[str] = field(default_factory=Counter, init=False)
    _flusher: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self, retry_after_s: float) -> None:
        buffer = buffer_name(self.key)
        self._fallbacks = metrics.series(metrics.COUNTER_FALLBACKS, buffer=buffer)
        self._dropped = metrics.series(metrics.COUNTER_ENTRIES_DROPPED, buffer=buffer)
        self.backoff = Backoff(
            f"counting in Redis ({self.key}) failed (%r); keeping the counts in this process",
            retry_after_s=retry_after_s,
        )

    @property
    def pending(self) -> dict[str, int]:
        """What this process holds that Redis has not been sent yet (a copy)."""
        return dict(self._pending)

    async def record(self, name: str) -> None:
        if name in self._pending or len(self._pending) < self.max_entries:
            self._pending[name] += 1
        else:
            self._dropped.add()
        self._start_flusher()

    def _start_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._flusher
        if task is None or task.done() or task.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        """Flush every `flush_every_s` while this task is the buffer's flusher. `aclose` stops
        it by taking the task away as well as by cancelling it: a cancellation that a library
        under `flush` turns into an error (seen in CI: the flusher went on sleeping and
        flushing, still marked cancelling, and `aclose` waited for it for good) ends the loop
        at its next turn all the same."""
        while self._flusher is asyncio.current_task():
            await asyncio.sleep(self.flush_every_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the pending counts to Redis in one pipeline; on failure keep them (never
        raises). Counts recorded while it waits stay pending for the next flush."""
        if not self._pending or not self.backoff.ready():
            return
        counts, self._pending = self._pending, Counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.redis.client().pipeline(transaction=False) as pipe:
                    for name, count in counts.items():
                        pipe.hincrby(self.key, name, count)
                    await pipe.execute()
        except Exception as exc:  # any Redis failure: kept for a later flush
            self.backoff.failed(exc)
            self._fallbacks.add(len(counts))
            self._keep(counts)
        except asyncio.CancelledError:  # the flusher stopped mid-write: kept for aclose
            self._keep(counts)
            raise

    def _keep(self, counts: dict[str, int]) -> None:
        dropped = merge_pending(self._pending, counts, self.max_entries)
        if dropped:
            self._dropped.add(dropped)

    def flush_blocking(self) -> None:
        """From synchronous code between two runs of the loop the counts were recorded on
        (the end of a Lambda invocation, after Mangum or the job runner returned): run a
        flush on that loop, whose Redis connections are that loop's. Nothing to do when
        nothing is pending or that loop is gone or running (its flusher writes them)."""
        task = self._flusher
        if not self._pending or task is None:
            return
        loop = task.get_loop()
        if loop.is_closed() or loop.is_running():
            return
        try:
            loop.run_until_complete(self.flush())
        except Exception:  # never fails the invocation: the counts stay pending
            logger.exception("flushing %s failed", self.key)

    async def drain(self) -> dict[str, int]:
        await self.flush()
        counts, self._pending = self._pending, Counter()  # what Redis could not take
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
        self._keep(counts)
        await self.flush()

    async def aclose(self) -> None:
        """Write what is pending (a graceful stop loses nothing), then stop the flusher."""
        task, self._flusher = self._flusher, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            # Waited for, not awaited: the flusher's CancelledError is not this caller's, and
            # a cancellation of this caller must not be taken for it and suppressed.
            await asyncio.wait({task})
        await self.flush()
        await self.redis.aclose()


def flush_blocking(buffers: Sequence[BufferedCounts]) -> None:
    """`flush_blocking` of each buffer (none of them raises)."""
    for buffer in buffers:
        buffer.flush_blocking()


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


def _with_tenant(parts: list[str], tenant: uuid.UUID) -> str:
    return json.dumps(parts if tenant == DEFAULT_TENANT_ID else [*parts, str(tenant)])


def search_count_entry(query: str, client: str, tenant: uuid.UUID = DEFAULT_TENANT_ID) -> str:
    return _with_tenant([normalise_query(query), client], tenant)


def history_entry(user_sub: str, query: str, tenant: uuid.UUID = DEFAULT_TENANT_ID) -> str:
    return _with_tenant([user_sub, normalise_query(query)], tenant)


def view_entry(product_id: str, tenant: uuid.UUID = DEFAULT_TENANT_ID) -> str:
    return product_id if tenant == DEFAULT_TENANT_ID else f"{tenant}:{product_id}"


@dataclass(frozen=True, slots=True, order=True)
class SearchCount:
    query: str
    client: str
    tenant: uuid.UUID = DEFAULT_TENANT_ID


@dataclass(frozen=True, slots=True, order=True)
class ViewCount:
    product_id: str
    count: int
    tenant: uuid.UUID = DEFAULT_TENANT_ID


@dataclass(frozen=True, slots=True, order=True)
class HistoryEntry:
    user_sub: str
    query: str
    tenant: uuid.UUID = DEFAULT_TENANT_ID


def _canonical_uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None


def _pair(name: str) -> tuple[str, str, uuid.UUID] | None:
    """The two parts of an entry and its tenant (`default` when it names none)."""
    try:
        value = json.loads(name)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can parse
        return None
    if not isinstance(value, list) or len(value) not in (2, 3):
        return None
    if not all(isinstance(part, str) for part in value):
        return None
    tenant = DEFAULT_TENANT_ID if len(value) == 2 else _canonical_uuid(value[2])
    if tenant is None:
        return None
    return value[0], value[1], tenant


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
    query, client, tenant = pair
    problem = _query_problem(query) or _count_problem(count)
    if problem is not None:
        return problem
    if not CLIENT_HASH.fullmatch(client):
        return "client is not a client hash"
    return SearchCount(query, client, tenant)


def parse_view_count(name: str, count: int) -> ViewCount | str:
    tenant_text, named, product_id = name.rpartition(":")
    tenant = _canonical_uuid(tenant_text) if named else DEFAULT_TENANT_ID
    if tenant is None or _canonical_uuid(product_id) is None:
        return "not a product id (a UUID in canonical form)"
    return _count_problem(count) or ViewCount(product_id, count, tenant)


def parse_history(name: str, count: int) -> HistoryEntry | str:
    pair = _pair(name)
    if pair is None:
        return "not a JSON [user, query] pair"
    user_sub, query, tenant = pair
    if not 1 <= len(user_sub) <= MAX_SUBJECT_LENGTH or not is_clean_identifier(user_sub):
        return "user is not a token subject"
    return _query_problem(query) or _count_problem(count) or HistoryEntry(user_sub, query, tenant)


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
ON CONFLICT (tenant_id, query) DO UPDATE
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

"""The fleet's shared cache (L2): rendered pages in Redis, read after a process's own cache
(L1) and before the database, so a process that never served a page (a new Lambda
environment, a restarted worker) serves it warm; and the fill lock that makes one process of
the fleet render a cold page while the others wait for its copy.

An entry is the page's bytes, gzipped bytes, ETag, render time and tags in a compact binary
form (`encode` / `decode`), kept for the route's `s-maxage`. Keys, under the namespace
(`SHARED_CACHE_NAMESPACE`; `KeyNames`):
- `<ns>:e1:<key>` an entry (`1`: the encoding's version, so a new encoding never reads old
  bytes);
- `<ns>:lock:<key>` the fill lock (SET NX PX, with a random token), held by the one process
  rendering the page;
- `<ns>:t:<mark>` a sorted set of the entries filed under a mark (a tag, or a key prefix a
  write can name: `edgemart.changes.key_marks`), scored by their expiry, so expired members
  are pruned as others are added;
- `<ns>:d:<mark>` when a write last dropped the mark (Redis's clock, microseconds), kept
  `DROP_MEMORY_S`.
A cache key longer than `MAX_RAW_KEY` characters is named by its SHA-256.

A write drops every entry under each of its marks and publishes its changes in the same
script (`drop`), so a process told of a write never finds the old page in Redis afterwards.
A fill that began before a drop of one of its page's marks may have read the old data: its
store is refused (`store` compares the lookup's Redis time with the marks' drop times), so a
slow render can never put back what a write removed.

Every Redis call here is bounded by a short timeout; after a failure Redis is left alone for
`retry_after_s` (`reachable` is False), the way the rate limiter falls back: the caller serves
from L1 and the database, never an error. Failures are counted (`shared_cache_errors`) and
logged at most once a minute. The scripts touch keys they compute (the members of a mark's
set), so the shared cache needs a single Redis node, not a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgemart import metrics
from edgemart.backoff import Backoff
from edgemart.cache import FROM_L2, MISS, STALE, Filled, Render, Rendered, encoded_etag
from edgemart.changes import Changes, key_marks
from edgemart.compression import GZIP
from edgemart.errors import EdgemartError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from edgemart.redisclient import LazyRedis


L2 = "l2"
"""The shared cache, as the `layer` of cache metrics."""

DROP_MEMORY_S = 300
"""How long a mark's drop time is kept: longer than any render can take."""

MAX_RAW_KEY = 200


class SharedCacheUnavailableError(EdgemartError):
    """Redis failed, was too slow, or is being left alone after a failure."""


class CorruptEntryError(EdgemartError):
    """Bytes that are not an entry of this encoding."""


# ---- Encoding (pure) ----

MAGIC = b"EM"
VERSION = 1
_GZIPPED = 1
_HEAD = struct.Struct(">2sBBdHI")  # magic, version, flags, created_at, ETag length, body length
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


def encode(rendered: Rendered) -> bytes:
    """An entry: a fixed head, the ETag and body, then the gzipped body (when there is one),
    then the tags. The gzip ETag is not stored: it is derived from the ETag."""
    etag = rendered.etag.encode()
    gzipped = rendered.gzip_body
    flags = _GZIPPED if gzipped is not None else 0
    parts = [
        _HEAD.pack(MAGIC, VERSION, flags, rendered.created_at, len(etag), len(rendered.body)),
        etag,
        rendered.body,
    ]
    if gzipped is not None:
        parts += [_U32.pack(len(gzipped)), gzipped]
    tags = [tag.encode() for tag in rendered.tags]
    parts.append(_U16.pack(len(tags)))
    for tag in tags:
        parts += [_U16.pack(len(tag)), tag]
    return b"".join(parts)


def decode(data: bytes) -> Rendered:
    """The page `encode` made; CorruptEntryError for anything else.

    One pass with a running offset and `unpack_from`, no reader object: this runs on every
    L2 hit, and a home page carries a few dozen tags (decision 0032 has the figures)."""
    size = len(data)
    if size < _HEAD.size:
        raise CorruptEntryError("entry cut short")
    magic, version, flags, created_at, etag_length, body_length = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or flags & ~_GZIPPED:
        raise CorruptEntryError("not an entry of this encoding")
    at = _HEAD.size + etag_length
    body_end = at + body_length
    if body_end > size:
        raise CorruptEntryError("entry cut short")
    try:
        etag = data[_HEAD.size : at].decode()
        body = data[at:body_end]
        at = body_end
        gzipped = None
        if flags & _GZIPPED:
            gzipped, at = _chunk(data, at, _U32)
        count, at = _length(data, at, _U16)
        tags = []
        read_length = _U16.unpack_from
        for _ in range(count):  # inline, not `_chunk`: a call per tag is most of the time
            (length,) = read_length(data, at)
            at += 2
            tags.append(data[at : at + length].decode())
            at += length
    except UnicodeDecodeError:
        raise CorruptEntryError("text that is not UTF-8") from None
    except struct.error:  # a tag's length past the end
        raise CorruptEntryError("entry cut short") from None
    if at != size:  # past the end when a tag's bytes were cut short
        raise CorruptEntryError("entry cut short" if at > size else "bytes after the entry")
    gzip_etag = encoded_etag(etag, GZIP) if gzipped is not None else None
    return Rendered(body, etag, created_at, gzipped, gzip_etag, tuple(tags))


def _length(data: bytes, at: int, layout: struct.Struct) -> tuple[int, int]:
    """The length `layout` holds at `at`, and the offset after it."""
    end = at + layout.size
    if end > len(data):
        raise CorruptEntryError("entry cut short")
    return layout.unpack_from(data, at)[0], end


def _chunk(data: bytes, at: int, layout: struct.Struct) -> tuple[bytes, int]:
    """The bytes after a length in `layout` at `at`, and the offset after them."""
    length, at = _length(data, at, layout)
    end = at + length
    if end > len(data):
        raise CorruptEntryError("entry cut short")
    return data[at:end], end


# ---- Key names (pure) ----


def _name(key: str) -> str:
    """A cache key or mark in a Redis key: as it is (`=`) unless long (`#` and its SHA-256)."""
    if len(key) <= MAX_RAW_KEY:
        return "=" + key
    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyNames:
    namespace: str

    def entry(self, key: str) -> str:
        return f"{self.namespace}:e{VERSION}:{_name(key)}"

    def lock(self, key: str) -> str:
        return f"{self.namespace}:lock:{_name(key)}"

    def filed(self, mark: str) -> str:
        """The sorted set of the entries filed under `mark`."""
        return f"{self.namespace}:t:{_name(mark)}"

    def dropped(self, mark: str) -> str:
        """When a write last dropped `mark`."""
        return f"{self.namespace}:d:{_name(mark)}"

    @property
    def channel(self) -> str:
        """The pub/sub channel of invalidations (`edgemart.broadcast`)."""
        return f"{self.namespace}:invalidations"


# ---- Scripts ----

# Times are Redis's clock in microseconds, built as text (seconds, then six digits): a Lua
# number handed to Redis could come out in exponent notation.

# Run after a plain GET found nothing (`RedisSharedCache.lookup`), so it looks again: an
# entry stored in between is a hit, not a lock taken for nothing.
# KEYS: entry, lock. ARGV: token, lock TTL ms.
# {1, entry} when the entry exists; else {0, Redis time in µs, 1 if the lock was taken}.
LOOKUP_SCRIPT = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
local now = redis.call('TIME')
local since = now[1] .. string.format('%06d', tonumber(now[2]))
local taken = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
return {0, since, taken and 1 or 0}
"""

# KEYS: entry, lock, then n sets, then n drop times. ARGV: entry, TTL ms, lookup's time in µs,
# lock token ('' when not holding it), n. Returns 1 when stored, 0 when refused.
STORE_SCRIPT = """
local n = tonumber(ARGV[5])
local since = tonumber(ARGV[3])
local stored = 1
for i = 1, n do
  local dropped = redis.call('GET', KEYS[2 + n + i])
  if dropped and tonumber(dropped) >= since then stored = 0 break end
end
if stored == 1 then
  local ttl = tonumber(ARGV[2])
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  for i = 1, n do
    local filed = KEYS[2 + i]
    redis.call('ZREMRANGEBYSCORE', filed, '-inf', string.format('%d', now_ms))
    redis.call('ZADD', filed, string.format('%d', now_ms + ttl), KEYS[1])
    if redis.call('PTTL', filed) < ttl then redis.call('PEXPIRE', filed, ARGV[2]) end
  end
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return stored
"""

# KEYS: lock. ARGV: token. Releases the lock if this token still holds it.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: n sets, then n drop times. ARGV: n, drop memory ms, channel, message ('' for none).
DROP_SCRIPT = """
local n = tonumber(ARGV[1])
local now = redis.call('TIME')
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
for i = 1, n do
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    redis.call('DEL', entry)
  end
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[n + i], now_us, 'PX', ARGV[2])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return n
"""


class _Script:
    """A Lua script run by EVALSHA, loaded again when the server does not know it (after a
    restart or SCRIPT FLUSH)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: Redis, keys: Sequence[str], args: Sequence[object]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]


_LOOKUP, _STORE = _Script(LOOKUP_SCRIPT), _Script(STORE_SCRIPT)
_RELEASE, _DROP = _Script(RELEASE_SCRIPT), _Script(DROP_SCRIPT)


# ---- The shared cache ----


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup's answer: the entry, or when Redis looked (`since_us`, Redis's clock: a store
    is refused if a write dropped one of the page's marks at or after it) and the fill lock's
    token when this lookup took the lock."""

    rendered: Rendered | None
    since_us: int = 0
    token: str | None = None


class SharedCache(Protocol):
    def reachable(self) -> bool:
        """False while Redis is left alone after a failure."""
        ...

    async def lookup(self, key: str) -> Lookup:
        """The entry, or the fill lock if no other process holds it."""
        ...

    async def store(self, key: str, rendered: Rendered, ttl_s: float, found: Lookup) -> bool:
        """Keep the page rendered after `found`, filed under its marks, and release the lock
        `found` took; False when a write dropped one of its marks since `found`."""
        ...

    async def release(self, key: str, found: Lookup) -> None:
        """Give up the lock `found` took (its render failed), so a waiting process need not
        wait for it to expire."""
        ...

    async def drop(self, changes: Changes, message: str | None) -> None:
        """Drop every entry under the changes' marks and publish `message` (when given)."""
        ...


class RedisSharedCache:
    def __init__(
        self,
        redis: LazyRedis,
        *,
        namespace: str,
        timeout_s: float = 0.05,
        drop_timeout_s: float = 0.25,
        lock_ttl_s: float = 1.0,
        retry_after_s: float = 1.0,
        log_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`timeout_s` bounds lookups and stores; a write's drop is worth waiting a little
        longer for (the write has committed; its response waits): `drop_timeout_s`, or
        `timeout_s` if that is longer."""
        self.redis = redis
        self.names = KeyNames(namespace)
        self.timeout_s = timeout_s
        self.drop_timeout_s = max(timeout_s, drop_timeout_s)
        self.lock_ttl_s = lock_ttl_s
        self.backoff = Backoff(
            "shared cache: Redis %s failed (%r); serving from this process and the database",
            retry_after_s=retry_after_s,
            log_every_s=log_every_s,
            clock=clock,
        )

    def reachable(self) -> bool:
        return self.backoff.ready()

    async def lookup(self, key: str) -> Lookup:
        """A plain GET first, the lookup script only when it finds nothing: a hit (the common
        case) costs one GET, cheaper for the client than an EVALSHA; a miss costs a second
        round trip, whose script looks again before taking the lock (an entry stored in
        between is a hit). Both within one `timeout_s`."""
        entry = self.names.entry(key)
        token = os.urandom(8).hex()
        keys = [entry, self.names.lock(key)]
        args = [token, max(1, round(self.lock_ttl_s * 1000))]

        async def get_then_lock(client: Redis) -> Any:
            found = await client.get(entry)
            if found is not None:
                return [1, found]
            return await _LOOKUP.run(client, keys, args)

        reply = await self._bounded("lookup", self.timeout_s, get_then_lock)
        if reply[0] == 1:
            try:
                return Lookup(decode(reply[1]))
            except CorruptEntryError as exc:
                self._failed("lookup", exc)
                raise SharedCacheUnavailableError(str(exc)) from None
        return Lookup(None, int(reply[1]), token if reply[2] == 1 else None)

    async def store(self, key: str, rendered: Rendered, ttl_s: float, found: Lookup) -> bool:
        marks = key_marks(key, rendered.tags)
        keys = [
            self.names.entry(key),
            self.names.lock(key),
            *(self.names.filed(mark) for mark in marks),
            *(self.names.dropped(mark) for mark in marks),
        ]
        ttl_ms = max(1, round(ttl_s * 1000))
        args = [encode(rendered), ttl_ms, found.since_us, found.token or "", len(marks)]
        return bool(await self._call("store", self.timeout_s, _STORE, keys, args) == 1)

    async def release(self, key: str, found: Lookup) -> None:
        if found.token is not None:
            await self._call(
                "release", self.timeout_s, _RELEASE, [self.names.lock(key)], [found.token]
            )

    async def drop(self, changes: Changes, message: str | None) -> None:
        marks = changes.marks
        keys = [
            *(self.names.filed(mark) for mark in marks),
            *(self.names.dropped(mark) for mark in marks),
        ]
        args = [len(marks), DROP_MEMORY_S * 1000, self.names.channel, message or ""]
        await self._call("drop", self.drop_timeout_s, _DROP, keys, args)

    async def _call(
        self,
        operation: str,
        timeout_s: float,
        script: _Script,
        keys: Sequence[str],
        args: Sequence[object],
    ) -> Any:
        return await self._bounded(
            operation, timeout_s, lambda client: script.run(client, keys, args)
        )

    async def _bounded(
        self, operation: str, timeout_s: float, calls: Callable[[Redis], Awaitable[Any]]
    ) -> Any:
        """`calls` on the client within `timeout_s`; SharedCacheUnavailableError (and Redis
        left alone for a while) if they fail or take longer."""
        if not self.reachable():
            raise SharedCacheUnavailableError("left alone after a failure")
        try:
            # Built before the clock starts: a cold process's first call imports redis-py
            # (~50 ms), which would otherwise use up the timeout and leave Redis alone for
            # the process's first second, the one a cold Lambda most needs L2 in.
            client = self.redis.client()
            async with asyncio.timeout(timeout_s):
                return await calls(client)
        except Exception as exc:  # any failure of Redis means: do without it for a while
            self._failed(operation, exc)
            raise SharedCacheUnavailableError(repr(exc)) from exc

    def _failed(self, operation: str, exc: BaseException) -> None:
        metrics.record(metrics.SHARED_CACHE_ERRORS, operation=operation)
        self.backoff.failed(operation, exc)


# ---- Filling a miss: one render per cold page across the fleet ----

Step = Literal["use_entry", "render", "serve_last_good", "wait"]


def next_step(found: Lookup, has_last_good: bool) -> Step:
    """What a process does after a lookup: use the entry; render (it holds the lock); serve
    its own last good copy while another process renders; or wait for that render."""
    if found.rendered is not None:
        return "use_entry"
    if found.token is not None:
        return "render"
    return "serve_last_good" if has_last_good else "wait"


def poll_delays(wait_s: float, *, first_s: float = 0.01, longest_s: float = 0.1) -> list[float]:
    """The pauses between lookups while another process renders: doubling from `first_s` up
    to `longest_s`, adding up to `wait_s` at most."""
    delays: list[float] = []
    delay, total = first_s, 0.0
    while total + delay <= wait_s + 1e-9:
        delays.append(delay)
        total += delay
        delay = min(delay * 2, longest_s)
    return delays


class SharedFill:
    """`TTLCache.fill` over a shared cache: the entry if Redis has it; else the fill lock and
    a render stored for the fleet; else (another process renders) this process's trusted last
    good copy, or a wait for the other's copy, taking the lock over if its holder let it
    expire (it died, or is slow). After `wait_s` without a copy the process renders itself:
    a dead renderer never blocks anyone for longer. With Redis unavailable, it renders.

    Counted: `cache_lookups` in `l2` (hit, miss, unavailable; one per fill, however many
    lookups its waiting took) and `cache_fills` (how a miss was filled)."""

    def __init__(self, shared: SharedCache, *, wait_s: float) -> None:
        self.shared = shared
        self.delays = poll_delays(wait_s)

    async def __call__(
        self,
        key: str,
        ttl_s: float,
        rule_name: str,
        render: Render,
        last_good: Rendered | None,
    ) -> Filled:
        found: Lookup | None = None
        for attempt, delay in enumerate([0.0, *self.delays]):
            if delay:
                await asyncio.sleep(delay)
            try:
                found = await self.shared.lookup(key)
            except SharedCacheUnavailableError:
                if attempt == 0:
                    count_l2(rule_name, "unavailable")
                return Filled(await render(), MISS)
            step = next_step(found, last_good is not None)
            if attempt == 0:
                count_l2(rule_name, "hit" if step == "use_entry" else "miss")
            if step == "use_entry" and found.rendered is not None:
                if attempt:
                    count_fill(rule_name, "waited")
                return Filled(found.rendered, FROM_L2)
            if step == "render":
                count_fill(rule_name, "rendered" if attempt == 0 else "took_over")
                return await self._render_and_store(key, ttl_s, rule_name, render, found)
            if step == "serve_last_good" and last_good is not None:
                count_fill(rule_name, "stale")
                return Filled(last_good, STALE)
        count_fill(rule_name, "timed_out")
        return await self._render_and_store(key, ttl_s, rule_name, render, found)

    async def _render_and_store(
        self, key: str, ttl_s: float, rule_name: str, render: Render, found: Lookup | None
    ) -> Filled:
        try:
            rendered = await render()
        except Exception:
            if found is not None and found.token is not None:
                with suppress(SharedCacheUnavailableError):
                    await self.shared.release(key, found)  # the others need not wait for it
            raise
        if found is None:
            return Filled(rendered, MISS)
        try:
            stored = await self.shared.store(key, rendered, ttl_s, found)
        except SharedCacheUnavailableError:
            return Filled(rendered, MISS)
        if not stored:
            count_fill(rule_name, "refused")
        return Filled(rendered, MISS, keep=stored)


def count_l2(rule_name: str, result: str) -> None:
    metrics.record(metrics.CACHE_LOOKUPS, layer=L2, cache_rule=rule_name, result=result)


def count_fill(rule_name: str, outcome: str) -> None:
    metrics.record(metrics.CACHE_FILLS, cache_rule=rule_name, outcome=outcome)

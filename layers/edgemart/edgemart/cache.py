"""HTTP caching: the cache-rules table, ETags and conditional GETs, and the in-process cache.

`CACHE_RULES` is the single source of the caching rules (the route table names each
route's rule): it renders the `Cache-Control` the
functions send, and the SAM template's CloudFront policies and the local edge are checked
against it. The in-process cache (L1) holds rendered JSON bytes with their ETag, so a hit
costs no query and no serialisation; concurrent misses for one key run the loader once
(single-flight); and the last good copy of each key is kept after it expires, for serving
stale data while the database is down.

Behind L1, when Redis is configured, lies the fleet's shared cache (L2, `edgemart.sharedcache`):
a miss asks it before the database (`TTLCache.fill`), and an L1 entry is served only while
`TTLCache.trust` says no other process's write can have made it stale unseen
(`edgemart.broadcast`). An L1 hit never touches Redis.

A rendered page names what it shows as tags (`edgemart.changes`), sent to the edge as
`X-Edgemart-Tags` so that it can drop pages by tag too.

Pages belong to the request's tenant: `serve_cached` keeps them under the tenant's key with
the tenant's tags (`edgemart.tenantscope.scoped`; the default tenant's are spelled as before
tenancy), and another tenant's page says whose it is in `X-Edgemart-Tenant` (decision 0043).

A rendered body over about 1 KB is gzipped once, when rendered, and kept beside the plain one
(`Rendered.gzip_body`), so a hit never compresses again. The two are distinct representations
with distinct strong ETags (the gzip one ends in `-gzip"`), and every cacheable response says
`Vary: Accept-Encoding`, compressed or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from psycopg import OperationalError
from starlette.requests import Request
from starlette.responses import Response

from edgemart import metrics
from edgemart.compression import GZIP, accepts_gzip, gzip_body
from edgemart.db import UNAVAILABLE_ERRORS
from edgemart.logging import logger
from edgemart.routetable import ROUTES
from edgemart.tenancy import DEFAULT_TENANT_ID, Tenant, tenant_of
from edgemart.tenantscope import scoped

if TYPE_CHECKING:
    from edgemart.retry import RetryPolicy

L1 = "l1"
"""This process's cache, as the `layer` of cache metrics (the shared cache is `l2`)."""

TAGS_HEADER = "X-Edgemart-Tags"
"""The tags of a cacheable response, space-separated: the edge bans its copies by them."""
CDN_HOST_HEADER = "X-Forwarded-Host"
"""Where the CDN puts the viewer's host before it makes the cache key: every cache policy of
the template keys on it, so two tenants' pages at one path are two objects (CloudFront must
not forward `Host` itself to an API Gateway origin, decision 0043)."""
TENANT_HEADER = "X-Edgemart-Tenant"
"""The tenant id of a cacheable response of any tenant but the default one: the local edge
files the page's URL under it, so a ban by URL drops that tenant's copies only."""

Source = Literal["hit", "l2", "miss", "stale"]
"""Where a cached route's response came from, as the access log's `cache` field says: `hit`
(this process's cache), `l2` (the shared cache), `miss` (rendered from the database), `stale`
(a last good copy: the database is unavailable, or another process is rendering the page)."""
HIT: Source = "hit"
FROM_L2: Source = "l2"
MISS: Source = "miss"
STALE: Source = "stale"

LOAD_WAIT_S = 30.0
"""The longest a request waits for a page's load (one it started or joined). Every wait of a
load is bounded (a pool wait and a statement timeout per attempt, within the retry budget;
Redis calls at tens of milliseconds), so a load still running after twice the slowest the
default timeouts allow is stuck for good: it is abandoned rather than left holding every
request for the page (decision 0047)."""

NO_STORE: Mapping[str, str] = {"Cache-Control": "no-store"}
"""Headers for everything that must never be cached (money, admin, health, seller pages)."""


@dataclass(frozen=True, slots=True)
class CacheRule:
    """Caching for one group of GET routes. `query_params` lists the parameters that are part
    of the cache key (None: every parameter, normalised; empty: none). `key_headers` are
    request headers in the edge's cache key: `Authorization` where a signed-in request must
    reach the origin with its token (search history; PATCH shares the product path), while
    anonymous requests, which carry none, still share one entry."""

    name: str
    s_maxage: int
    stale_while_revalidate: int
    stale_if_error: int
    query_params: tuple[str, ...] | None = ()
    key_headers: tuple[str, ...] = ()

    @property
    def routes(self) -> tuple[str, ...]:
        """`GET /products/{product_id}`: the route table's routes that name this rule."""
        return tuple(route.label for route in ROUTES if route.cache_rule == self.name)

    @property
    def cache_control(self) -> str:
        return (
            f"public, max-age=0, s-maxage={self.s_maxage}, "
            f"stale-while-revalidate={self.stale_while_revalidate}, "
            f"stale-if-error={self.stale_if_error}"
        )


DAY, HOUR = 86_400, 3_600

CACHE_RULES: Mapping[str, CacheRule] = {
    rule.name: rule
    for rule in (
        CacheRule("home", 60, 300, DAY),
        CacheRule(
            "search",
            30,
            60,
            HOUR,
            query_params=None,
            key_headers=("Authorization",),
        ),
        CacheRule("popular_searches", 60, 300, DAY),
        CacheRule(
            "store_page",
            120,
            600,
            DAY,
            query_params=("limit", "cursor", "category"),
        ),
        CacheRule("product_page", 120, 600, DAY, key_headers=("Authorization",)),
    )
}
"""Routes not listed here (purchases, wallet, admin, health, seller pages) send no-store."""


def normalised_query(request: Request, rule: CacheRule) -> str:
    """The query string as part of a cache key: only the rule's parameters, sorted."""
    items = request.query_params.multi_items()
    if rule.query_params is not None:
        items = [(k, v) for k, v in items if k in rule.query_params]
    return "&".join(f"{k}={v}" for k, v in sorted(items))


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def encoded_etag(etag: str, encoding: str) -> str:
    """The strong ETag of the body in a content coding: another representation, another tag
    (RFC 9110 §8.8.3), derived from the plain one so both name the same document."""
    return etag[:-1] + "-" + encoding + '"'


def if_none_match_hits(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison, a list of tags, or `*`."""
    if not header:
        return False
    opaque = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Rendered:
    """A JSON body rendered once, with its ETag and when it was made (wall-clock seconds: the
    shared cache carries it between processes, so `Age` counts from the render), the same body
    gzipped with its own ETag (None when it is too small to compress), and the tags of what
    it shows."""

    body: bytes
    etag: str
    created_at: float
    gzip_body: bytes | None = None
    gzip_etag: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, payload: Any, *, now: float, tags: Iterable[str] = ()) -> Rendered:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        etag = strong_etag(body)
        gzipped = gzip_body(body)
        gzip_etag = encoded_etag(etag, GZIP) if gzipped is not None else None
        return cls(body, etag, now, gzipped, gzip_etag, tuple(dict.fromkeys(tags)))


def representation(
    rendered: Rendered, accept_encoding: str | None
) -> tuple[bytes, str, str | None]:
    """(body, ETag, content coding or None) of what to send for this `Accept-Encoding`."""
    if rendered.gzip_body is not None and rendered.gzip_etag is not None:
        if accepts_gzip(accept_encoding):
            return rendered.gzip_body, rendered.gzip_etag, GZIP
    return rendered.body, rendered.etag, None


def cached_response(
    request: Request,
    rendered: Rendered,
    rule: CacheRule,
    *,
    stale: bool = False,
    now: float | None = None,
) -> Response:
    """200 with the body (gzipped when the client accepts it and the cache holds it so), or
    304 when `If-None-Match` matches the representation that would be sent; both carry its
    ETag, Cache-Control, `Vary: Accept-Encoding` and the page's tags (`X-Edgemart-Tags`). A
    stale copy adds `X-Edgemart-Stale: true` and `Age`."""
    body, etag, encoding = representation(rendered, request.headers.get("accept-encoding"))
    headers = {"ETag": etag, "Cache-Control": rule.cache_control, "Vary": "Accept-Encoding"}
    if rendered.tags:
        headers[TAGS_HEADER] = " ".join(rendered.tags)
    tenant_id = tenant_of(request.scope).id
    if tenant_id != DEFAULT_TENANT_ID:
        headers[TENANT_HEADER] = str(tenant_id)
    if stale:
        age = max(0, int((now if now is not None else time.time()) - rendered.created_at))
        headers["X-Edgemart-Stale"] = "true"
        headers["Age"] = str(age)
    if if_none_match_hits(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return Response(body, headers=headers, media_type="application/json")


class LoadTimeoutError(OperationalError):
    """A page's load did not finish within `TTLCache.load_wait_s`. An unavailability like a
    lost connection (a psycopg OperationalError, in `edgemart.db.UNAVAILABLE_ERRORS`): the
    request is answered with the last good copy, else 503."""


class _Entry:
    __slots__ = ("rendered", "expires_at", "as_of", "tags")

    def __init__(
        self, rendered: Rendered, expires_at: float, as_of: float, tags: frozenset[str]
    ) -> None:
        self.rendered = rendered
        self.expires_at = expires_at
        self.as_of = as_of
        """When the fill that made it began: it reflects every write committed before."""
        self.tags = tags


Tags = Callable[[Any], Iterable[str]]
"""What a loaded document shows, as tags (`edgemart.changes`): a write that changes one of
them drops every entry carrying it."""

Render = Callable[[], Awaitable[Rendered]]
"""Loads the document from the database and renders it (with its tags)."""


@dataclass(frozen=True, slots=True)
class Filled:
    """What a fill produced: the page, where it came from, and whether this process may keep
    it as fresh (False when a write may have changed it while it was rendered)."""

    rendered: Rendered
    source: Source
    keep: bool = True


class Fill(Protocol):
    """What lies behind L1 (the shared cache's `edgemart.sharedcache.SharedFill`): the page of
    `key`, from the shared cache or rendered; `last_good` is this process's trusted last
    good copy, which it may answer with (as `stale`) while another process renders."""

    async def __call__(
        self,
        key: str,
        ttl_s: float,
        rule_name: str,
        render: Render,
        last_good: Rendered | None,
    ) -> Filled: ...


Trust = Callable[[float, float], bool]
"""`trust(as_of, now)`: whether an entry whose fill began at `as_of` may still be served at
`now` without asking the shared cache (`edgemart.broadcast.Broadcast.trusts`)."""


@dataclass(eq=False, repr=False)
class TTLCache:
    """In-process cache of rendered responses with single-flight and last-known-good copies.

    `get_or_fill` returns a fresh entry, or runs `loader` once however many callers miss the
    same key at the same time. Expired entries stay (up to `max_entries`, least recently used
    evicted first) as the last known good copy, which `last_good` returns for stale serving.

    Entries carry tags naming what they show; `invalidate` drops entries by key, key prefix or
    tag, after a write this process committed or heard of. A load that was running when an
    invalidation came may have read the data before the write: its result still answers the
    requests waiting for it, but it is not kept as fresh, and later requests start a load of
    their own.

    With a shared cache behind it, `fill` replaces the plain load and `trust` decides whether
    an unexpired entry may still be served (see the module docstring); without one, an entry
    is fresh until it expires.

    A caller waits `load_wait_s` at most for a load (`LOAD_WAIT_S`); a load still running
    then is abandoned: cancelled, logged with where it is stuck, and never joined again, and
    each of its callers gets `LoadTimeoutError`.
    """

    _: KW_ONLY
    max_entries: int = 10_000
    clock: Callable[[], float] = time.time
    fill: Fill | None = None
    trust: Trust | None = None
    load_wait_s: float = LOAD_WAIT_S
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict, init=False)
    _tagged: dict[str, set[str]] = field(default_factory=dict, init=False)
    _inflight: dict[str, asyncio.Task[Filled]] = field(default_factory=dict, init=False)
    _invalidations: int = field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: str) -> Rendered | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if entry.expires_at <= now:
            return None
        if self.trust is not None and not self.trust(entry.as_of, now):
            return None
        self._entries.move_to_end(key)
        return entry.rendered

    def last_good(self, key: str) -> Rendered | None:
        entry = self._entries.get(key)
        return entry.rendered if entry is not None else None

    def trusted_last_good(self, key: str) -> Rendered | None:
        """The last good copy, expired or not, if no write can have changed it unseen."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.trust is not None and not self.trust(entry.as_of, self.clock()):
            return None
        return entry.rendered

    def put(
        self,
        key: str,
        rendered: Rendered,
        ttl_s: float,
        tags: Iterable[str] | None = None,
        *,
        as_of: float | None = None,
    ) -> None:
        """Keep `rendered` for `ttl_s` from now, tagged with `tags` (its own by default);
        `as_of` is when its fill began (now by default)."""
        self._discard(key)
        now = self.clock()
        entry_tags = frozenset(rendered.tags if tags is None else tags)
        entry = _Entry(rendered, now + ttl_s, now if as_of is None else as_of, entry_tags)
        self._entries[key] = entry
        for tag in entry.tags:
            self._tagged.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._discard(next(iter(self._entries)))

    def invalidate(
        self, key: str | None = None, *, prefixes: Iterable[str] = (), tags: Iterable[str] = ()
    ) -> None:
        """Forget entries entirely (after a write this process made or heard of): `key`, every
        key that starts with one of `prefixes`, every entry tagged with one of `tags`."""
        doomed = set() if key is None else {key}
        prefixes = tuple(prefixes)
        if prefixes:
            doomed.update(k for k in self._entries if k.startswith(prefixes))
        for tag in tags:
            doomed.update(self._tagged.get(tag, ()))
        for doomed_key in doomed:
            self._discard(doomed_key)
        self._invalidations += 1
        # Loads under way may have read what the write replaced: later callers must not join
        # them (their current waiters still get their answer).
        self._inflight.clear()

    def _discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry.tags:
            keys = self._tagged.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tagged[tag]

    async def get_or_fill(
        self,
        key: str,
        ttl_s: float,
        loader: Callable[[], Awaitable[Any]],
        tags: Tags | None = None,
        *,
        rule_name: str = "other",
    ) -> Filled:
        """The fresh entry (`hit`), or one fill for every concurrent caller missing `key`;
        `rule_name` names the cache rule in the shared cache's metrics."""
        rendered = self.fresh(key)
        if rendered is not None:
            return Filled(rendered, HIT)
        task = self._inflight.get(key)
        if task is None:
            # The load runs as its own task: a caller that gives up (client gone) does not
            # cancel it for the others waiting on the same key.
            task = asyncio.ensure_future(self._load(key, ttl_s, rule_name, loader, tags))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._load_finished(key, done))
        return await self._outcome(key, task)

    async def _outcome(self, key: str, task: asyncio.Task[Filled]) -> Filled:
        """The load's result, waited for `load_wait_s` at most. `asyncio.wait` rather than
        `asyncio.shield`: a caller that gives up (client gone) does not cancel the load for
        the others either, and a load past the bound is given up on, not waited for."""
        done, _ = await asyncio.wait({task}, timeout=self.load_wait_s)
        if not done or task.cancelled():  # abandoned, by this caller or by another one
            if not done:
                self._abandon(key, task)
            raise LoadTimeoutError(f"the load of {key!r} took over {self.load_wait_s:g} s")
        return task.result()

    def _abandon(self, key: str, task: asyncio.Task[Filled]) -> None:
        """Cancel a stuck load, and say where it is stuck (the first caller to give up on
        it); no later caller joins it."""
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelling():
            return  # another caller gave up on it already
        stack = io.StringIO()
        task.print_stack(limit=40, file=stack)
        logger.warning(
            "cache: the load of %r ran over %s s and was abandoned; it was at:\n%s",
            key,
            self.load_wait_s,
            stack.getvalue(),
        )
        task.cancel()

    async def _load(
        self,
        key: str,
        ttl_s: float,
        rule_name: str,
        loader: Callable[[], Awaitable[Any]],
        tags: Tags | None,
    ) -> Filled:
        invalidations = self._invalidations
        as_of = self.clock()

        async def render() -> Rendered:
            document = await loader()
            page_tags = tags(document) if tags is not None else ()
            return Rendered.of(document, now=self.clock(), tags=page_tags)

        if self.fill is None:
            filled = Filled(await render(), MISS)
        else:
            filled = await self.fill(key, ttl_s, rule_name, render, self.trusted_last_good(key))
        if filled.source == STALE:
            return filled  # this process's own copy, already kept
        # Fresh for the route's TTL from its render (earlier, when another process made it).
        ttl_left = max(0.0, filled.rendered.created_at + ttl_s - self.clock())
        if self._invalidations != invalidations or not filled.keep:
            # It may predate a write: at most a last good copy, never over a newer entry.
            if key in self._entries:
                return filled
            ttl_left = 0
        self.put(key, filled.rendered, ttl_left, as_of=as_of)
        return filled

    def _load_finished(self, key: str, task: asyncio.Task[Filled]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported twice


def tenant_key(request: Request, key: str) -> str:
    """`key` (a page's key within its tenant) as the cache holds it for the request's tenant."""
    return scoped(tenant_of(request.scope), key)


def tenant_tags(tenant: Tenant, tags: Tags) -> Tags:
    """`tags` as the tenant's (the default tenant's are unchanged)."""
    if tenant.id == DEFAULT_TENANT_ID:
        return tags
    return lambda document: [scoped(tenant, tag) for tag in tags(document)]


async def serve_cached(
    request: Request,
    cache: TTLCache,
    key: str,
    rule: CacheRule,
    loader: Callable[[], Awaitable[Any]],
    *,
    retry: RetryPolicy | None = None,
    tags: Tags | None = None,
) -> Response:
    """The route's response from the cache, the shared cache or the loader (retried on
    transient errors when a policy is given: a read is safe to repeat); when the database is
    unavailable, the last good copy, marked stale (`X-Edgemart-Stale: true`, `Age`). With no
    copy at all the unavailability propagates (503). Each call counts one `cache_lookups`
    result in L1 and names where the response came from in the access log (`Source`).

    `key` and `tags` are the page's within its tenant: the page is kept under the request's
    tenant's key (`tenant_key`) with its tenant's tags."""
    tenant = tenant_of(request.scope)
    key = scoped(tenant, key)
    if tags is not None:
        tags = tenant_tags(tenant, tags)
    rendered = cache.fresh(key)
    if rendered is not None:
        served(request, rule, HIT)
        return cached_response(request, rendered, rule)
    load = loader if retry is None else (lambda: retry.run(loader))
    try:
        filled = await cache.get_or_fill(key, rule.s_maxage, load, tags, rule_name=rule.name)
    except UNAVAILABLE_ERRORS:
        stale = cache.last_good(key)
        served(request, rule, MISS if stale is None else STALE)
        if stale is None:
            raise
        return cached_response(request, stale, rule, stale=True, now=cache.clock())
    served(request, rule, filled.source)
    is_stale = filled.source == STALE
    return cached_response(request, filled.rendered, rule, stale=is_stale, now=cache.clock())


def served(request: Request, rule: CacheRule, source: Source) -> None:
    """Count the L1 lookup (a page from L2 or the database was an L1 miss) and tell the
    access log where the response came from."""
    count_lookup(rule, MISS if source == FROM_L2 else source)
    request.scope.setdefault("state", {})["cache"] = source


_lookups: dict[tuple[str, str], metrics.Series] = {}


def count_lookup(rule: CacheRule, result: str) -> None:
    """One `cache_lookups` in L1; the series bound once per rule and result (a hit is the
    hot path)."""
    series = _lookups.get((rule.name, result))
    if series is None:
        series = metrics.series(
            metrics.CACHE_LOOKUPS, layer=L1, cache_rule=rule.name, result=result
        )
        _lookups[rule.name, result] = series
    series.add()

"""Dropping the edge's copies of what a committed write changed, and how long a page showing
stock may live at the edge.

The edge is CloudFront in AWS and, locally, Varnish (`edgemart edge-vcl`). A committed write
describes what it changed as `Changes` (edgemart.changes: tags such as `product:<id>`, cache
key prefixes such as `search?`), and `Services.invalidate` hands them to the process's
`EdgePurge` last. `purge(changes)` queues the edge's copies of those pages for removal and
returns at once; a sender thread of the purge's own sends them, and a failure is logged and
counted (`edge_purges`), never raised into the write.

- `VarnishPurge`: an HTTP `BAN` per changed tag, matched against the `X-Edgemart-Tags` header
  the page was stored with (so every page showing the product or store goes, whatever its
  URL), and one per key prefix, matched against the URL the VCL stores with each page
  (`X-Edge-Url`). Both test `obj.*` only, so Varnish's ban lurker can clear them in the
  background. Sent as soon as they are queued.
- `CloudFrontPurge`: one `CreateInvalidation` per second at most, with every path queued since
  the last. CloudFront cannot drop by tag, so a tag becomes the path of the page it names
  (`product:<id>` -> `/products/<id>`) and a key prefix the path of its route; a route whose
  cache key holds query parameters gets a trailing `*` (every query of it). Explicit paths
  only, never `/*`. Throttling is retried with back-off while a page the batch names may
  still be fresh at the edge.

`TAG_PAGES` and `PREFIX_PAGES` are the one declaration of which route a tag or prefix names;
both backends derive their requests from it.

Tenants (decision 0043): tags and prefixes are their tenant's (`edgemart.tenantscope`). The
local edge keys its cache on the host and keeps each page's tags as the origin sent them
(scoped), and its URL scoped by the page's tenant (`X-Edgemart-Tenant`), so a ban drops the
written tenant's copies only, on whichever of its domains they were stored. CloudFront
cannot drop by tag or by host: one distribution serves every tenant's domains and an
invalidation path covers the path on all of them, so another tenant's copies of the same path
are dropped too (a miss for them, never a stale page for the writer's).

Pages showing stock (`STOCK_RULES`) also stay at the edge for at most `STOCK_EDGE_TTL_S`,
whatever their rule's s-maxage: an invalidation reaches a product's own page but not the search
and store pages listing it, and a purge can fail. The VCL and the template's CloudFront cache
policies both take their TTLs from `edge_ttl` (decision 0035).

In Lambda the process is frozen between invocations, so each invocation ends with `flush`:
it waits for the sends under way and for whatever may go now. A CloudFront batch not yet due
(a call went out less than a second ago) goes with a later invocation or, if none comes, the
stock bound caps how long its pages stay stale.

http.client (Varnish) and boto3 (CloudFront) are imported by the sender thread when it first
sends, so a process that never writes loads neither.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from edgemart import metrics
from edgemart.cache import CACHE_RULES, TAGS_HEADER, CacheRule
from edgemart.changes import (
    POPULAR_SEARCHES_KEY,
    SEARCH_KEY_PREFIX,
    Changes,
    product_tag,
    store_tag,
)
from edgemart.logging import ThrottledWarning, logger
from edgemart.routetable import ROUTES, RouteSpec
from edgemart.settings import SettingsError
from edgemart.tenantscope import scoped, split_scope

if TYPE_CHECKING:
    import http.client

    from edgemart.settings import Settings

URL_HEADER = "X-Edge-Url"
"""The (normalised) URL a page is stored under, set by the VCL on each stored object."""
BAN_HEADER = "X-Edgemart-Ban"
"""Carries a BAN request's ban expression to the VCL."""

VARNISH = "varnish"
CLOUDFRONT = "cloudfront"
BACKENDS = ("off", VARNISH, CLOUDFRONT)

# ---- How long a page showing stock lives at the edge ----

STOCK_EDGE_TTL_S = 10
"""Longest time an edge serves a page showing stock as fresh, whatever its rule's s-maxage."""
STOCK_RULES = frozenset({"search", "store_page", "product_page"})
"""Cache rules whose pages show stock (`in_stock`, `stock_available`) read at request time.
The home page shows stock too, but from a snapshot rebuilt every 5 minutes: a shorter edge
TTL would not make it fresher."""


def edge_ttl(rule: CacheRule) -> int:
    """Seconds the edge keeps a page of `rule` fresh: its s-maxage, capped for stock pages."""
    return min(rule.s_maxage, STOCK_EDGE_TTL_S) if rule.name in STOCK_RULES else rule.s_maxage


# ---- What a change names at the edge: one declaration ----

TAG_PAGES: Mapping[str, str] = {
    product_tag(""): "GET /products/{product_id}",
    store_tag(""): "GET /stores/{slug}",
}
"""The page a tag names, by the tag's kind (`product:`): the route whose one path parameter
the tag's value fills. (Varnish drops every page carrying the tag; CloudFront only this one.)"""
PREFIX_PAGES: Mapping[str, str] = {
    SEARCH_KEY_PREFIX: "GET /marketplace/search",
    POPULAR_SEARCHES_KEY: "GET /marketplace/search/popular",
}
"""The pages a cache-key prefix names: every query of the route."""

_SAFE_TAG = re.compile(r"[a-z]+:[A-Za-z0-9_-]+")
"""Tags the edge is told about: a kind and an id or slug. Nothing in them is special in a
path, a regular expression or a ban expression (which may hold no space)."""
_PATH_PARAMETER = re.compile(r"\{\w+\}")
_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyInvalidationsInProgress", "RequestLimitExceeded"}
)


class Page:
    """A cached route as the edge sees it: its path, whether its cache key holds query
    parameters (then one page is many objects at the edge, one per query) and its edge TTL.
    A plain class: a dataclass would cost every cold start its generated methods."""

    __slots__ = ("path", "keyed_on_query", "edge_ttl")

    def __init__(self, path: str, keyed_on_query: bool, edge_ttl: int) -> None:
        self.path = path
        self.keyed_on_query = keyed_on_query
        self.edge_ttl = edge_ttl
        """Seconds a copy of it stays fresh at the edge (`edge_ttl` of its rule)."""

    def __repr__(self) -> str:
        return f"Page({self.path!r}, {self.keyed_on_query!r}, {self.edge_ttl!r})"

    @staticmethod
    @functools.cache
    def of(label: str) -> Page:
        """The page of a route of the table, `GET /stores/{slug}`."""
        spec = _route(label)
        if spec.cache_rule is None:
            raise ValueError(f"{label} is not cached: nothing to purge at the edge")
        rule = CACHE_RULES[spec.cache_rule]
        return Page(spec.path, rule.query_params != (), edge_ttl(rule))

    def invalidation_path(self, value: str | None = None) -> str:
        """Its CloudFront path: the parameter set to `value`, and a trailing `*` (every query)
        when the cache key holds query parameters."""
        path = self.path if value is None else _PATH_PARAMETER.sub(value, self.path, count=1)
        return path + ("*" if self.keyed_on_query else "")


def _route(label: str) -> RouteSpec:
    for spec in ROUTES:
        if spec.label == label:
            return spec
    raise ValueError(f"{label} is not in the route table")


def _tag_page(tag: str) -> tuple[Page, str] | None:
    """The page a tag (of any tenant) names and the tag's value; None for a tag naming no
    page."""
    unscoped_tag = split_scope(tag)[1]
    kind, separator, value = unscoped_tag.partition(":")
    label = TAG_PAGES.get(kind + separator)
    if label is None or not _SAFE_TAG.fullmatch(unscoped_tag):
        return None
    return Page.of(label), value


def _safe(tag: str) -> bool:
    """Whether a tag (of any tenant) may be named to the edge."""
    return _SAFE_TAG.fullmatch(split_scope(tag)[1]) is not None


def _prefix_page(prefix: str) -> Page | None:
    """The page a key prefix (of any tenant) names."""
    label = PREFIX_PAGES.get(split_scope(prefix)[1])
    return None if label is None else Page.of(label)


def cloudfront_targets(changes: Changes) -> dict[str, int]:
    """The invalidation paths of `changes`, in a stable order, each once, with the edge TTL
    of the pages each names (past it, invalidating them is moot)."""
    targets: dict[str, int] = {}
    for tag in sorted(changes.tags):
        named = _tag_page(tag)
        if named is not None:
            page, value = named
            targets[page.invalidation_path(value)] = page.edge_ttl
    for prefix in sorted(changes.prefixes):
        prefix_page = _prefix_page(prefix)
        if prefix_page is not None:
            targets[prefix_page.invalidation_path()] = prefix_page.edge_ttl
    return targets


def cloudfront_paths(changes: Changes) -> list[str]:
    """The invalidation paths of `changes`, in a stable order, each once."""
    return list(cloudfront_targets(changes))


def ban_expressions(changes: Changes) -> list[str]:
    """The Varnish ban expressions of `changes`: one per tag (pages carrying it in
    `X-Edgemart-Tags`: tags are their tenant's) and one per key prefix (pages of the prefix's
    tenant stored under its route's URL, any query: the edge scopes the URL it stores by the
    page's tenant as `scoped` does). A ban argument may hold no space and no quotes: `\\s`
    stands for the tags' separator."""
    expressions = [
        f"obj.http.{TAGS_HEADER} ~ (^|\\s){tag}(\\s|$)"
        for tag in sorted(changes.tags)
        if _safe(tag)
    ]
    for prefix in sorted(changes.prefixes):
        page = _prefix_page(prefix)
        if page is not None:
            url = re.escape(scoped(split_scope(prefix)[0], page.path))
            expressions.append(f"obj.http.{URL_HEADER} ~ ^{url}(\\?|$)")
    return expressions


def unnamed(changes: Changes) -> list[str]:
    """The tags and prefixes of `changes` no edge request can name (logged when purged)."""
    return sorted(
        [tag for tag in changes.tags if not _safe(tag)]
        + [prefix for prefix in changes.prefixes if _prefix_page(prefix) is None]
    )


# ---- Batching CloudFront's calls: pure, the caller passes the time ----


class InvalidationBatch:
    """Paths waiting for CloudFront, sent at most once per `every_s` with every path queued
    since the last call (up to `max_paths`, CloudFront's limit per call; the rest waits)."""

    def __init__(self, *, every_s: float = 1.0, max_paths: int = 3000) -> None:
        self.every_s = every_s
        self.max_paths = max_paths
        self._pending: dict[str, None] = {}
        self._first_queued_at: float | None = None
        self._last_call_at: float | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, paths: Iterable[str], now: float) -> None:
        for path in paths:
            self._pending[path] = None
        if self._pending and self._first_queued_at is None:
            self._first_queued_at = now

    def due_at(self) -> float | None:
        """When the next call may go with the paths waiting; None when none waits."""
        if not self._pending:
            return None
        if self._last_call_at is None:
            return float("-inf")
        return self._last_call_at + self.every_s

    def called(self, now: float) -> None:
        """A call went out at `now` (a retry counts too): the next waits `every_s`."""
        self._last_call_at = now

    def take(self, now: float) -> tuple[list[str], float] | None:
        """(paths, when the oldest was queued) for a call going out now, if one may go."""
        due = self.due_at()
        if due is None or now < due or self._first_queued_at is None:
            return None
        paths = list(self._pending)[: self.max_paths]
        for path in paths:
            del self._pending[path]
        queued_at = self._first_queued_at
        self._first_queued_at = now if self._pending else None
        self.called(now)
        return paths, queued_at


# ---- The protocol, and the thread both backends send from ----


class EdgePurge(Protocol):
    """Drops the edge's copies of changed pages. `purge` only queues (and never raises);
    `flush` waits until what may go now has gone (the end of a Lambda invocation);
    `aclose` sends everything left and stops."""

    backend: str

    def purge(self, changes: Changes) -> None: ...

    def flush(self, timeout_s: float = 5.0) -> bool: ...

    async def aclose(self) -> None: ...


class _Sender:
    """Queue, thread and lock shared by the backends. A subclass says what `_queue` keeps,
    when its next request is due (`_due_in`) and how a taken piece of work is sent (`_send`,
    run on the thread, outside the lock)."""

    backend = ""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sending = False
        self._closing = False
        self._failures = ThrottledWarning(f"edge purge ({self.backend}) failed: %s")

    def purge(self, changes: Changes) -> None:
        left_out = unnamed(changes)
        if left_out:
            logger.warning("edge purge: nothing at the edge is named by %s", left_out)
        with self._lock:
            if self._closing:
                logger.warning("edge purge: closed, %s not purged", sorted(changes.tags))
                return
            if not self._queue(changes, self.clock()):
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"edge-purge-{self.backend}", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until no request is under way and none is due now; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._sending or self._due_in(self.clock()) == 0:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Send everything queued, waiting for it to be due, then stop the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("edge purge (%s): closed with requests unsent", self.backend)

    async def aclose(self) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    wait_s = self._due_in(self.clock())
                    if wait_s == 0:
                        break
                    if wait_s is None and self._closing:
                        self._lock.notify_all()
                        self._thread = None
                        return
                    self._lock.wait(wait_s)
                work = self._take(self.clock())
                self._sending = True
            try:
                self._send(work)
            except Exception:  # a bug must not kill the thread with work queued behind it
                logger.exception("edge purge (%s): sending failed", self.backend)
            finally:
                with self._lock:
                    self._sending = False
                    self._lock.notify_all()

    def _record(self, result: str, queued_at: float | None = None) -> None:
        metrics.record(metrics.EDGE_PURGES, backend=self.backend, result=result)
        if queued_at is not None:
            lag_ms = max(0.0, (self.clock() - queued_at) * 1000)
            metrics.record(metrics.EDGE_PURGE_LAG, lag_ms, backend=self.backend)

    # Under the lock:
    def _queue(self, changes: Changes, now: float) -> bool:
        """Keep what `changes` asks for; False when nothing was queued."""
        raise NotImplementedError

    def _due_in(self, now: float) -> float | None:
        """Seconds until the next request is due (0: now); None when nothing is queued."""
        raise NotImplementedError

    def _take(self, now: float) -> Any:
        raise NotImplementedError

    # On the thread, outside the lock:
    def _send(self, work: Any) -> None:
        raise NotImplementedError


# ---- Varnish ----


class VarnishPurge(_Sender):
    """BAN requests to the local edge at `url` (its VCL must allow this host to ban), one per
    expression, on one kept-alive connection; a dropped connection is reopened once."""

    backend = VARNISH

    def __init__(
        self, url: str, *, timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(clock=clock)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"EDGE_PURGE_URL must be an http(s) URL, got {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._timeout_s = timeout_s
        self._pending: dict[str, float] = {}
        self._connection: http.client.HTTPConnection | None = None

    def _queue(self, changes: Changes, now: float) -> bool:
        expressions = ban_expressions(changes)
        for expression in expressions:
            self._pending.setdefault(expression, now)
        return bool(expressions)

    def _due_in(self, now: float) -> float | None:
        return 0 if self._pending else None

    def _take(self, now: float) -> dict[str, float]:
        taken, self._pending = self._pending, {}
        return taken

    def _send(self, work: dict[str, float]) -> None:
        import http.client

        for expression, queued_at in work.items():
            try:
                status = self._ban(expression)
            except (OSError, http.client.HTTPException) as exc:
                self._record("failed")
                self._failures.note(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                self._record("ok", queued_at)
            else:
                self._record("failed")
                self._failures.note(f"BAN answered {status}")

    def close(self, timeout_s: float = 30.0) -> None:
        super().close(timeout_s)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _ban(self, expression: str) -> int:
        """Status of one BAN; a kept-alive connection the edge closed is reopened once."""
        import http.client

        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect()
            try:
                connection.request("BAN", "/", headers={BAN_HEADER: expression})
                response = connection.getresponse()
                response.read()
                if response.will_close:
                    connection.close()
                    self._connection = None
                return response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connection = None
                if attempt == 2 or not reused:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        import http.client

        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        self._connection = cls(self._host, self._port, timeout=self._timeout_s)
        return self._connection


# ---- CloudFront ----


class _Invalidation:
    """One batch of paths and its tries: every try sends the same CallerReference, so a call
    CloudFront took but whose answer was lost is not made twice."""

    __slots__ = (
        "paths",
        "queued_at",
        "first_try_at",
        "horizon_s",
        "reference",
        "tries",
        "retry_at",
    )

    def __init__(
        self, paths: list[str], queued_at: float, first_try_at: float, horizon_s: float
    ) -> None:
        self.paths = paths
        self.queued_at = queued_at
        self.first_try_at = first_try_at
        self.horizon_s = horizon_s
        """No try starts later than this after the first: every page it names has expired at
        the edge by then (the longest edge TTL among them)."""
        self.reference = f"edgemart-{uuid.uuid4().hex}"
        self.tries = 0
        self.retry_at = 0.0


class CloudFrontPurge(_Sender):
    """`CreateInvalidation` on the distribution, batched per second. The distribution is
    `distribution_id`, or the value of the SSM parameter `distribution_parameter`, read once
    at the first send (the template's way: see decision 0035). `client` is a boto3
    CloudFront client (made at the first send when not given)."""

    backend = CLOUDFRONT

    def __init__(
        self,
        *,
        distribution_id: str | None = None,
        distribution_parameter: str | None = None,
        client: Any = None,
        every_s: float = 1.0,
        backoff_s: float = 1.0,
        give_up_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        if not (distribution_id or distribution_parameter):
            raise SettingsError(
                "EDGE_PURGE=cloudfront needs CLOUDFRONT_DISTRIBUTION_ID or "
                "CLOUDFRONT_DISTRIBUTION_PARAMETER"
            )
        self.distribution_id = distribution_id
        self.distribution_parameter = distribution_parameter
        self.backoff_s = backoff_s
        self.give_up_after_s = give_up_after_s
        """When set, replaces each batch's own horizon (the longest edge TTL of its pages)."""
        self._client = client
        self._batch = InvalidationBatch(every_s=every_s)
        self._edge_ttls: dict[str, int] = {}
        self._retry: _Invalidation | None = None

    def _queue(self, changes: Changes, now: float) -> bool:
        targets = cloudfront_targets(changes)
        for path, ttl in targets.items():
            self._edge_ttls[path] = max(ttl, self._edge_ttls.get(path, 0))
        self._batch.add(targets, now)
        return bool(targets)

    def _due_in(self, now: float) -> float | None:
        due = self._retry.retry_at if self._retry is not None else self._batch.due_at()
        return None if due is None else max(0.0, due - now)

    def _take(self, now: float) -> _Invalidation:
        if self._retry is not None:
            work, self._retry = self._retry, None
            self._batch.called(now)
            return work
        taken = self._batch.take(now)
        assert taken is not None  # _due_in said a call may go
        paths, queued_at = taken
        horizon_s = self.give_up_after_s
        if horizon_s is None:
            horizon_s = max(self._edge_ttls.pop(path, 0) for path in paths)
        else:
            for path in paths:
                self._edge_ttls.pop(path, None)
        return _Invalidation(paths, queued_at, first_try_at=now, horizon_s=horizon_s)

    def _send(self, work: _Invalidation) -> None:
        if work.tries and self.clock() - work.first_try_at > work.horizon_s:
            # A retry held up (a Lambda environment frozen through its back-off).
            self._failures.note(f"{len(work.paths)} paths not invalidated: retried too late")
            return
        work.tries += 1
        try:
            self._create(work)
        except Exception as exc:
            self._failed(work, exc)
            return
        self._record("ok", work.queued_at)

    def _create(self, work: _Invalidation) -> None:
        client = self._cloudfront()
        client.create_invalidation(
            DistributionId=self._distribution(),
            InvalidationBatch={
                "Paths": {"Quantity": len(work.paths), "Items": work.paths},
                "CallerReference": work.reference,
            },
        )

    def _failed(self, work: _Invalidation, exc: Exception) -> None:
        throttled = _error_code(exc) in _THROTTLING_CODES
        self._record("throttled" if throttled else "failed")
        now = self.clock()
        # At least `every_s` apart: a retry is a call like any other.
        retry_at = now + max(self._batch.every_s, self.backoff_s * 2 ** (work.tries - 1))
        if (throttled or _transient(exc)) and retry_at - work.first_try_at <= work.horizon_s:
            work.retry_at = retry_at
            with self._lock:
                self._retry = work
            return
        self._failures.note(f"{len(work.paths)} paths not invalidated: {exc}")

    def _cloudfront(self) -> Any:
        if self._client is None:
            self._client = cloudfront_client()
        return self._client

    def _distribution(self) -> str:
        if self.distribution_id is None:
            import boto3

            assert self.distribution_parameter is not None
            answer = boto3.client("ssm").get_parameter(Name=self.distribution_parameter)
            self.distribution_id = str(answer["Parameter"]["Value"])
        return self.distribution_id


def cloudfront_client() -> Any:
    """A boto3 CloudFront client making one attempt per call: the retries are
    `CloudFrontPurge`'s (botocore would retry throttling on its own, at its own pace)."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudfront", config=Config(retries={"total_max_attempts": 1}))


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _transient(exc: Exception) -> bool:
    """A failure a later try may not meet: a 5xx from AWS, or no answer at all."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return isinstance(status, int) and status >= 500
    return type(exc).__name__ in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    }


# ---- From settings ----


def build_edge_purge(settings: Settings) -> EdgePurge | None:
    """The configured purge (`EDGE_PURGE`), or None when it is off. A backend whose settings
    are missing is an error at start-up."""
    if settings.edge_purge == VARNISH:
        if not settings.edge_purge_url:
            raise SettingsError("EDGE_PURGE=varnish needs EDGE_PURGE_URL")
        return VarnishPurge(settings.edge_purge_url)
    if settings.edge_purge == CLOUDFRONT:
        return CloudFrontPurge(
            distribution_id=settings.cloudfront_distribution_id,
            distribution_parameter=settings.cloudfront_distribution_parameter,
        )
    return None

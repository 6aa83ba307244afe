"""Invalidation broadcast: a committed write's `Changes` reach the shared cache and every
process of the fleet, and the rule by which a process trusts its own cache meanwhile.

`Broadcast.send` drops the changes from the shared cache and publishes them on Redis pub/sub in
one script (`SharedCache.drop`); if Redis cannot be reached the changes are kept and sent with
the next write or when the subscription comes back, and the write's response never waits for
more than the drop's timeout. A long-lived process (a gateway worker) runs `listen` as a
background task: it subscribes, drops what every other process's writes changed from its own
cache, and pings through the subscription every `ping_every_s`; a pong proves every message
published before the ping has been read.

**Trust.** An unexpired entry of this process's cache is served without asking Redis only
when a write elsewhere cannot have changed it unseen (`Subscription.covers`):
- it was filled less than `window_s` (`TRUST_WINDOW_S`, 0.8 s) ago, or
- the subscription was live before the entry was filled and has proved itself within the
  last `window_s` (its last pong answers a ping sent less than `window_s` ago).
Otherwise the entry is read again from the shared cache, which the writer emptied in the
script that published. So every process serves a write within a second: a frozen Lambda
environment hears nothing while frozen (it does not subscribe at all), a subscription that
dropped (Redis restarted) loses what was published meanwhile, and in both cases entries older
than the window go back to Redis. When Redis itself is unavailable
(`SharedCache.reachable()` is False) nothing better can be learnt by asking it, and entries
are trusted until they expire, as without a shared cache.

**Tenants changed.** The same channel carries "the tenant directory changed" (a message with
`"tenants": true`, sent by `send(..., tenants_changed=True)`): every listening process calls
`on_tenants_changed`, which empties its host → tenant directory (edgemart.tenantdirectory),
whose entries follow the trust rule above too. The message also carries empty `tags` and
`prefixes`, so a process that predates it reads it as changing nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, NamedTuple

from edgemart import metrics
from edgemart.background import in_background
from edgemart.changes import Changes
from edgemart.errors import EdgemartError
from edgemart.logging import ThrottledWarning, logger
from edgemart.sharedcache import SharedCache, SharedCacheUnavailableError

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from edgemart.cache import TTLCache
    from edgemart.redisclient import LazyRedis

REDIS = "redis"
"""The `transport` of invalidations sent through Redis."""

TRUST_WINDOW_S = 0.8
"""How long an entry is trusted without a live subscription: under the one second a write may
take to reach every process, leaving room for the read that follows."""


class SubscriptionLostError(EdgemartError):
    """The subscription stopped answering pings."""


# ---- Messages (pure) ----


class Message(NamedTuple):
    origin: str
    changes: Changes
    tenants_changed: bool = False


def message_of(changes: Changes, origin: str, *, tenants_changed: bool = False) -> str:
    """The published form of `changes` (and of a tenant directory change), naming the process
    that sent them."""
    document: dict[str, object] = {
        "origin": origin,
        "tags": sorted(changes.tags),
        "prefixes": sorted(changes.prefixes),
    }
    if tenants_changed:
        document["tenants"] = True
    if changes.channels:
        document["channels"] = sorted(changes.channels)
    return json.dumps(document, separators=(",", ":"))


def changes_of(message: bytes | str) -> Message:
    """What a published message says; ValueError for anything else."""
    document = json.loads(message)
    if not isinstance(document, dict):
        raise ValueError("not an object")
    origin, tags, prefixes = document.get("origin"), document.get("tags"), document.get("prefixes")
    channels = document.get("channels", [])  # absent from a process that predates live updates
    if not isinstance(origin, str):
        raise ValueError("no origin")
    for value in (tags, prefixes, channels):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError("tags, prefixes and channels must be lists of strings")
    tenants = document.get("tenants", False)
    if not isinstance(tenants, bool):
        raise ValueError("tenants must be a boolean")
    changes = Changes(
        frozenset(tags),  # type: ignore[arg-type]
        frozenset(prefixes),  # type: ignore[arg-type]
        frozenset(channels),
    )
    return Message(origin, changes, tenants)


# ---- Trust (pure: the caller passes the time) ----


class Subscription:
    """What this process's subscription has proved, in the cache's clock."""

    __slots__ = ("window_s", "live_since", "confirmed_through")

    def __init__(self, window_s: float = TRUST_WINDOW_S) -> None:
        self.window_s = window_s
        self.live_since: float | None = None
        """When the current subscription was confirmed; None while there is none."""
        self.confirmed_through = -math.inf
        """Every message published before this time has been read."""

    def subscribed(self, now: float) -> None:
        self.live_since = now
        self.confirmed_through = now

    def confirmed(self, ping_sent_at: float) -> None:
        self.confirmed_through = max(self.confirmed_through, ping_sent_at)

    def dropped(self) -> None:
        self.live_since = None

    def covers(self, as_of: float, now: float) -> bool:
        """Whether an entry filled at `as_of` may be served at `now` without asking Redis."""
        if now - as_of <= self.window_s:
            return True
        return (
            self.live_since is not None
            and as_of >= self.live_since
            and now - self.confirmed_through <= self.window_s
        )


# ---- The broadcast ----


class Broadcast:
    def __init__(
        self,
        shared: SharedCache,
        redis: LazyRedis,
        cache: TTLCache,
        *,
        channel: str,
        window_s: float = TRUST_WINDOW_S,
        ping_every_s: float = 0.25,
        retry_after_s: float = 1.0,
        log_every_s: float = 60.0,
    ) -> None:
        self.shared = shared
        self.redis = redis
        self.cache = cache
        self.channel = channel
        self.subscription = Subscription(window_s)
        self.ping_every_s = ping_every_s
        self.retry_after_s = retry_after_s
        self.origin = os.urandom(8).hex()
        """This process, in its messages: it skips its own (it applied them when sending)."""
        self._pending = Changes()
        self._tenants_pending = False
        self._queued = 0
        """Calls of `send` that had something to send, so far."""
        self._settled = 0
        """Of those, how many a finished send has answered (sent, or kept after a failure)."""
        self._flushing: asyncio.Future[None] | None = None
        self.on_receive: Callable[[], None] | None = None
        """Called after another process's changes were applied here (read routing: read the
        primary until the replica holds the write)."""
        self.on_tenants_changed: Callable[[], None] | None = None
        """Called when another process changed the tenant directory (multi mode: forget
        every host)."""
        self.on_channels: Callable[[frozenset[str]], None] | None = None
        """Called with the live channels another process's write changed (edgemart.live)."""
        self._failures = ThrottledWarning(
            "invalidation broadcast: %s failed (%r)", every_s=log_every_s
        )

    @property
    def clock(self) -> Callable[[], float]:
        return self.cache.clock

    def trusts(self, as_of: float, now: float) -> bool:
        """`TTLCache.trust`: see the module docstring."""
        return self.subscription.covers(as_of, now) or not self.shared.reachable()

    async def send(self, changes: Changes, *, tenants_changed: bool = False) -> None:
        """Drop `changes` from the shared cache and publish them (and, with `tenants_changed`,
        that the tenant directory changed), with anything earlier that could not be sent.
        Never raises: on failure they wait for the next chance.

        Concurrent writes share a send: changes that arrive while one is on its way to Redis
        go together in the next, and each caller returns once a send holding its changes has
        answered (or failed and kept them). Under load that is one script call for many
        purchases instead of one each (bench/capacity/PROFILE.md)."""
        self._pending = self._pending | changes
        self._tenants_pending = self._tenants_pending or tenants_changed
        if not self._pending and not self._tenants_pending:
            return
        self._queued += 1
        mine = self._queued
        while self._settled < mine:
            flush = self._flushing
            if flush is None or flush.get_loop() is not asyncio.get_running_loop():
                flush = self._flushing = asyncio.ensure_future(self._flush())
            # Shielded: a caller that goes away does not take the others' send with it.
            await asyncio.shield(flush)

    async def _flush(self) -> None:
        """One send of everything pending; settles every caller queued before it began."""
        try:
            through = self._queued
            changes, self._pending = self._pending, Changes()
            tenants_changed, self._tenants_pending = self._tenants_pending, False
            if changes or tenants_changed:
                message = message_of(changes, self.origin, tenants_changed=tenants_changed)
                try:
                    await self.shared.drop(changes, message)
                except SharedCacheUnavailableError:
                    self._pending = self._pending | changes
                    self._tenants_pending = self._tenants_pending or tenants_changed
                else:
                    metrics.record(metrics.INVALIDATIONS_SENT, transport=REDIS)
            self._settled = max(self._settled, through)
        finally:
            self._flushing = None

    def receive(self, message: bytes | str) -> None:
        """Apply another process's changes to this process's cache."""
        try:
            origin, changes, tenants_changed = changes_of(message)
        except ValueError as exc:
            # Something changed, but what is unknown: forget every page (and host) rather
            # than guess.
            logger.warning("invalidation broadcast: unreadable message (%s); cache cleared", exc)
            self.cache.invalidate(prefixes=[""])
            if self.on_receive is not None:
                self.on_receive()
            if self.on_tenants_changed is not None:
                self.on_tenants_changed()
            return
        if origin == self.origin:
            return
        if changes:
            changes.apply(self.cache, transport=REDIS)
            if self.on_receive is not None and changes.stales_pages:
                self.on_receive()
            if self.on_channels is not None and changes.channels:
                self.on_channels(changes.channels)
        if tenants_changed and self.on_tenants_changed is not None:
            self.on_tenants_changed()

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """`listen` as a background task for the duration of the block."""
        async with in_background(self.listen()):
            yield

    async def listen(self) -> None:
        """Subscribe and apply messages until cancelled; after a failure, subscribe again
        `retry_after_s` later."""
        while True:
            try:
                await self._listen_once()
            except Exception as exc:  # any failure: no subscription until the next attempt
                metrics.record(metrics.SHARED_CACHE_ERRORS, operation="subscribe")
                self._failures.note("subscription", exc)
            finally:
                self.subscription.dropped()
            await asyncio.sleep(self.retry_after_s)

    async def _listen_once(self) -> None:
        pubsub = self.redis.client().pubsub()
        try:
            await self._subscribe(pubsub)
            await self.send(Changes())  # what could not be sent while Redis was away
            await self._read(pubsub)
        finally:
            # Shielded: a cancelled listener still hands its connection back.
            with suppress(Exception):
                await asyncio.shield(pubsub.aclose())

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(max(self.ping_every_s, 1.0)):
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=self.ping_every_s)
                if message is not None and message["type"] == "subscribe":
                    break
        self.subscription.subscribed(self.clock())

    async def _read(self, pubsub: PubSub) -> None:
        next_ping = 0.0
        while True:
            now = self.clock()
            if now >= next_ping:
                await pubsub.ping(repr(now))
                next_ping = now + self.ping_every_s
            if now - self.subscription.confirmed_through > 4 * self.ping_every_s + 1.0:
                raise SubscriptionLostError("no pong for a while")
            message = await pubsub.get_message(timeout=max(0.0, next_ping - now))
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "message":
            self.receive(message["data"])
        elif message["type"] == "pong":
            with suppress(ValueError):
                self.subscription.confirmed(float(message["data"]))

"""The long-lived clients one process shares: settings, database pools, the rate limiter,
the response cache (this process's, and the fleet's shared one in Redis with the invalidation
broadcast when REDIS_URL is set).

Built once per process (per Lambda execution environment) and attached to the app, so tests
can hand an app their own `Services` instead of patching module globals.

A function that committed a write calls `invalidate` with what it changed: the one way a write
reaches every cache (see `invalidate`). In multi mode (`TENANCY=multi`) the services hold the
process's host → tenant directory; a change of tenants or domains is announced with
`tenant_directory_changed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from edgemart.auth import Authenticator
from edgemart.cache import TTLCache
from edgemart.changes import Changes
from edgemart.counters import (
    SEARCH_COUNTS_KEY,
    SEARCH_HISTORY_KEY,
    VIEW_COUNTS_KEY,
    BufferedCounts,
    buffered_counts,
    flush_blocking,
)
from edgemart.db import Database, replica_configured
from edgemart.logging import logger
from edgemart.purchasequeue import PurchaseQueue, SqsPurchaseQueue
from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.policies import build_rate_limiter
from edgemart.readrouting import ReadRouting
from edgemart.redisclient import LazyRedis
from edgemart.retry import RetryPolicy
from edgemart.settings import Settings

if TYPE_CHECKING:
    from edgemart.broadcast import Broadcast
    from edgemart.edgepurge import EdgePurge
    from edgemart.live.hub import LiveHub
    from edgemart.live.outlet import LiveOutlet
    from edgemart.sharedcache import SharedCache
    from edgemart.tenantdirectory import TenantDirectory
    from edgemart.tracing.tracer import Tracing


@dataclass(slots=True)
class Services:
    settings: Settings
    primary: Database
    replica: Database
    reads: ReadRouting
    rate_limiter: RateLimiter
    cache: TTLCache
    search_counts: BufferedCounts
    view_counts: BufferedCounts
    search_history: BufferedCounts
    authenticator: Authenticator
    retry: RetryPolicy
    purchase_queue: PurchaseQueue | None = None
    tracing: Tracing | None = None
    shared_cache: SharedCache | None = None
    broadcast: Broadcast | None = None
    edge_purge: EdgePurge | None = None
    tenant_directory: TenantDirectory | None = None
    """Multi mode's host → tenant lookups (edgemart.tenantdirectory); None in single mode."""
    live: LiveOutlet | None = None
    """Where committed `Changes.channels` go: this gateway process's sockets (`attach_live`)
    or, on AWS, the WebSocket API's connections (`WS_API_ENDPOINT`)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        tracing: Tracing | None = None
        if settings.tracing != "off":  # OpenTelemetry is loaded only past this test
            from edgemart.tracing.tracer import tracing_from

            tracing = tracing_from(settings)
        primary = Database.primary_from(settings, tracing=tracing)
        replica = (
            Database.replica_from(settings, tracing=tracing)
            if replica_configured(settings)
            else None
        )
        # One Redis client (one bounded pool) for the limiter, the counter buffers and the
        # shared cache.
        redis = LazyRedis(settings.redis_url, tracing=tracing) if settings.redis_url else None
        cache = TTLCache()
        reads = ReadRouting.from_settings(settings, primary, replica)
        shared_cache: SharedCache | None = None
        broadcast: Broadcast | None = None
        if redis is not None and settings.shared_cache == "auto":
            shared_cache, broadcast = _fleet_cache(settings, redis, cache)
            # A page another process's write dropped must not be reloaded from a replica
            # that has not replayed the write yet.
            broadcast.on_receive = reads.wrote
        return cls(
            settings=settings,
            primary=primary,
            replica=replica or primary,
            reads=reads,
            rate_limiter=build_rate_limiter(settings, redis=redis, tracing=tracing),
            cache=cache,
            search_counts=buffered_counts(redis, SEARCH_COUNTS_KEY),
            view_counts=buffered_counts(redis, VIEW_COUNTS_KEY),
            search_history=buffered_counts(redis, SEARCH_HISTORY_KEY),
            authenticator=Authenticator.from_settings(settings),
            retry=RetryPolicy(),
            purchase_queue=(
                SqsPurchaseQueue(
                    settings.purchase_queue_url,
                    endpoint_url=settings.sqs_endpoint_url,
                    tracing=tracing,
                )
                if settings.purchase_queue_url
                else None
            ),
            tracing=tracing,
            shared_cache=shared_cache,
            broadcast=broadcast,
            edge_purge=_edge_purge(settings),
            tenant_directory=_tenant_directory(settings, primary, cache, broadcast),
            live=_api_gateway_push(settings, primary),
        )

    async def invalidate(self, changes: Changes) -> None:
        """After a committed write: drop what it changed from this process's cache at once,
        then from the shared cache and every other process's cache (`edgemart.broadcast`),
        then from the edge (`edge_purge`, when set). Never raises: the write has committed,
        and its response must not fail because a cache could not be told (a broadcast that
        failed is logged, counted and sent again later)."""
        if not changes:
            return
        changes.apply(self.cache)
        if changes.stales_pages:
            self.reads.wrote()  # its pages reload from the primary until the replica holds it
        if self.live is not None and changes.channels:
            try:
                await self.live.publish(changes.channels)
            except Exception:  # best effort: a subscriber that reconnects reads the state
                logger.exception("live updates: publishing failed")
        if self.broadcast is not None:
            await self.broadcast.send(changes)
        if self.edge_purge is not None and changes.stales_pages:
            try:
                self.edge_purge.purge(changes)
            except Exception:
                logger.exception("edge purge failed")

    async def tenant_directory_changed(self) -> None:
        """After a committed change of tenants or their domains (the platform routes): this
        process forgets every host at once, and every other process within a second
        (edgemart.tenantdirectory). Never raises, like `invalidate`."""
        if self.tenant_directory is not None:
            self.tenant_directory.changed()
        if self.broadcast is not None:
            await self.broadcast.send(Changes(), tenants_changed=True)

    def attach_live(self, live: LiveHub) -> None:
        """Deliver committed changes to `live`'s sockets: this process's at once, every other
        process's through the broadcast."""
        self.live = live
        if self.broadcast is not None:
            self.broadcast.on_channels = live.changed

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """For a long-lived process (the gateway's lifespan): hear other processes' writes
        for the duration of the block. A Lambda environment does not (see edgemart.broadcast)."""
        if self.broadcast is None:
            yield
            return
        async with self.broadcast.listening():
            yield

    def flush_counters_blocking(self) -> None:
        """At the end of a Lambda invocation, before the environment may be frozen: write
        the counts it recorded to Redis (`edgemart.counters.RedisCounts.flush_blocking`)."""
        flush_blocking((self.search_counts, self.view_counts, self.search_history))

    async def aclose(self) -> None:
        await self.rate_limiter.aclose()
        await self.search_counts.aclose()
        await self.view_counts.aclose()
        await self.search_history.aclose()
        await self.reads.aclose()
        if self.edge_purge is not None:
            await self.edge_purge.aclose()
        await self.primary.close()
        if self.replica is not self.primary:
            await self.replica.close()
        if self.tracing is not None:
            self.tracing.shutdown()


def _edge_purge(settings: Settings) -> EdgePurge | None:
    """`EDGE_PURGE`'s purge; its module is imported only when one is configured."""
    if settings.edge_purge == "off":
        return None
    from edgemart.edgepurge import build_edge_purge

    return build_edge_purge(settings)


def _tenant_directory(
    settings: Settings, primary: Database, cache: TTLCache, broadcast: Broadcast | None
) -> TenantDirectory | None:
    """Multi mode's directory, trusting its entries as the page cache trusts its own: by the
    broadcast's subscription when there is one, else for its window alone."""
    if settings.tenancy != "multi":
        return None
    from edgemart.broadcast import Subscription
    from edgemart.tenantdirectory import DatabaseTenantSource, TenantDirectory

    subscription = broadcast.subscription if broadcast is not None else Subscription()
    directory = TenantDirectory(
        DatabaseTenantSource(primary), trusts=subscription.covers, clock=cache.clock
    )
    if broadcast is not None:
        broadcast.on_tenants_changed = directory.changed
    return directory


def _api_gateway_push(settings: Settings, primary: Database) -> LiveOutlet | None:
    """On AWS (`WS_API_ENDPOINT`): committed changes are posted to the WebSocket API's
    subscribed connections; its modules are imported only then."""
    if not settings.ws_api_endpoint:
        return None
    from edgemart.live.apigateway import ApiGatewayPush, ManagementApi

    return ApiGatewayPush(primary, ManagementApi(settings.ws_api_endpoint))


def _fleet_cache(
    settings: Settings, redis: LazyRedis, cache: TTLCache
) -> tuple[SharedCache, Broadcast]:
    """The shared cache and broadcast, wired behind `cache`."""
    from edgemart.broadcast import Broadcast
    from edgemart.sharedcache import RedisSharedCache, SharedFill

    wait_s = settings.shared_cache_fill_wait_ms / 1000
    shared = RedisSharedCache(
        redis,
        namespace=settings.shared_cache_namespace,
        timeout_s=settings.shared_cache_timeout_ms / 1000,
        lock_ttl_s=wait_s,
    )
    broadcast = Broadcast(shared, redis, cache, channel=shared.names.channel)
    cache.fill = SharedFill(shared, wait_s=wait_s)
    cache.trust = broadcast.trusts
    return shared, broadcast


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services

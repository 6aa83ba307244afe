"""The long-lived clients one process shares: settings, database pools, the rate limiter,
the in-process response cache.

Built once per process (per Lambda execution environment) and attached to the app, so tests
can hand an app their own `Services` instead of patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from edgemart.auth import Authenticator
from edgemart.cache import TTLCache
from edgemart.counters import (
    SEARCH_COUNTS_KEY,
    SEARCH_HISTORY_KEY,
    VIEW_COUNTS_KEY,
    BufferedCounts,
    buffered_counts,
)
from edgemart.db import Database, replica_configured
from edgemart.purchasequeue import PurchaseQueue, SqsPurchaseQueue
from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.policies import build_rate_limiter
from edgemart.readrouting import ReadRouting
from edgemart.redisclient import LazyRedis
from edgemart.retry import RetryPolicy
from edgemart.settings import Settings

if TYPE_CHECKING:
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
        # One Redis client (one bounded pool) for the limiter and every counter buffer.
        redis = LazyRedis(settings.redis_url, tracing=tracing) if settings.redis_url else None
        return cls(
            settings=settings,
            primary=primary,
            replica=replica or primary,
            reads=ReadRouting.from_settings(settings, primary, replica),
            rate_limiter=build_rate_limiter(settings, redis=redis, tracing=tracing),
            cache=TTLCache(),
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
        )

    async def aclose(self) -> None:
        await self.rate_limiter.aclose()
        await self.search_counts.aclose()
        await self.view_counts.aclose()
        await self.search_history.aclose()
        await self.reads.aclose()
        await self.primary.close()
        if self.replica is not self.primary:
            await self.replica.close()
        if self.tracing is not None:
            self.tracing.shutdown()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services

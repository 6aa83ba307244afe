"""A shared backend with the local limiter behind it.

If the shared backend errors or does not answer within `timeout_s`, that request is checked
against the local memory limiter instead: limits become per process for a while, but no
request fails because the limiter's backend is down. After a failure the shared backend is
skipped for `retry_after_s`, then tried again, so it is used again as soon as it is back.
Fall-backs are counted (`rate_limit_fallbacks`) and logged at most once per `log_every_s`.
"""

from __future__ import annotations

import asyncio

from edgemart import metrics
from edgemart.backoff import Backoff
from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.window import Decision, Policy


class FallbackRateLimiter:
    def __init__(
        self,
        shared: RateLimiter,
        local: MemoryRateLimiter,
        *,
        timeout_s: float = 0.05,
        retry_after_s: float = 1.0,
        log_every_s: float = 60.0,
    ) -> None:
        self.shared = shared
        self.local = local
        self.backend = shared.backend
        self.timeout_s = timeout_s
        self.backoff = Backoff(
            f"rate limit backend {self.backend} failed (%r); using the local limiter",
            retry_after_s=retry_after_s,
            log_every_s=log_every_s,
        )
        self._fallbacks = metrics.series(metrics.RATE_LIMIT_FALLBACKS, backend=self.backend)

    async def check(self, key: str, policy: Policy) -> Decision:
        if self.backoff.ready():
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self.shared.check(key, policy)
            except Exception as exc:  # any failure of the shared backend means: go local
                self.backoff.failed(exc)
        self._fallbacks.add()
        return (await self.local.check(key, policy))._replace(fallback=True)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(max(self.timeout_s, 0.5)):
                return await self.shared.ping()
        except Exception:
            return False

    async def aclose(self) -> None:
        await self.shared.aclose()
        await self.local.aclose()

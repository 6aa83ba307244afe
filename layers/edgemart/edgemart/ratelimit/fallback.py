"""A shared backend with the local limiter behind it.

If the shared backend errors or does not answer within `timeout_s`, that request is checked
against the local memory limiter instead: limits become per process for a while, but no
request fails because the limiter's backend is down. After a failure the shared backend is
skipped for `retry_after_s`, then tried again, so it is used again as soon as it is back.
Fall-backs are counted (`rate_limit_fallbacks`) and logged at most once per `log_every_s`.
"""

from __future__ import annotations

import asyncio
from dataclasses import KW_ONLY, InitVar, dataclass

from edgemart import metrics
from edgemart.backoff import Backoff
from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.window import Decision, Policy


@dataclass(eq=False, repr=False)
class FallbackRateLimiter:
    shared: RateLimiter
    local: MemoryRateLimiter
    _: KW_ONLY
    timeout_s: float = 0.05
    retry_after_s: InitVar[float] = 1.0
    log_every_s: InitVar[float] = 60.0

    def __post_init__(self, retry_after_s: float, log_every_s: float) -> None:
        self.backend = self.shared.backend
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

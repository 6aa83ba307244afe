"""The shared backend fails: requests are still answered, limited locally, and the shared
backend is used again once it is back. Against a Redis the test starts and kills itself."""

from __future__ import annotations

import asyncio

import pytest

from edgemart import metrics
from edgemart.ratelimit.fallback import FallbackRateLimiter
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.redis import RedisRateLimiter
from edgemart.ratelimit.window import Policy
from tests.conftest import LogCapture, RedisProcess

pytestmark = pytest.mark.anyio


async def test_redis_killed_then_restarted(
    own_redis: RedisProcess, captured_logs: LogCapture
) -> None:
    limiter = FallbackRateLimiter(
        RedisRateLimiter(own_redis.url, socket_timeout_s=0.2),
        MemoryRateLimiter(),
        timeout_s=0.05,
        retry_after_s=0.2,
        log_every_s=60,
    )
    policy = Policy("fallback", 5, 60)
    try:
        shared = await limiter.check("ip:a", policy)
        assert shared.allowed and not shared.fallback
        assert await limiter.ping()

        own_redis.kill()
        before = metrics.count(metrics.RATE_LIMIT_FALLBACKS, backend="redis")
        local = [await limiter.check("ip:a", policy) for _ in range(10)]
        assert all(d.fallback for d in local)
        # The local limiter enforces the same policy on its own count.
        assert [d.allowed for d in local] == [True] * 5 + [False] * 5
        assert metrics.count(metrics.RATE_LIMIT_FALLBACKS, backend="redis") - before == 10
        assert not await limiter.ping()
        warnings = [line for line in captured_logs.lines() if line["level"] == "WARNING"]
        assert len(warnings) == 1  # logged once, not once per request

        own_redis.start()
        await asyncio.sleep(0.25)
        back = await limiter.check("ip:a", policy)
        assert not back.fallback
        # The restarted server kept nothing on disk, so its count starts over.
        assert back.allowed and back.remaining == 4
    finally:
        await limiter.aclose()


async def test_a_slow_backend_times_out_into_the_fallback(own_redis: RedisProcess) -> None:
    class SlowLimiter(RedisRateLimiter):
        async def check(self, key: str, policy: Policy):  # type: ignore[no-untyped-def]
            await asyncio.sleep(1)
            return await super().check(key, policy)

    limiter = FallbackRateLimiter(SlowLimiter(own_redis.url), MemoryRateLimiter(), timeout_s=0.05)
    try:
        started = asyncio.get_running_loop().time()
        decision = await limiter.check("ip:b", Policy("slow", 5, 60))
        assert decision.fallback and decision.allowed
        assert asyncio.get_running_loop().time() - started < 0.5
    finally:
        await limiter.aclose()

"""Buffered counters on the real Redis, and one Redis client per process."""

from __future__ import annotations

import uuid

import pytest

from edgemart import metrics
from edgemart.counters import COUNTER_FALLBACK_METRIC, MemoryCounts, RedisCounts
from edgemart.redisclient import LazyRedis
from edgemart.services import Services
from tests.conftest import RedisProcess, settings_for

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_record_drain_restore(kind: str, redis_url: str) -> None:
    redis = LazyRedis(redis_url)
    counts = (
        RedisCounts(redis, f"edgemart-test:{uuid.uuid4().hex}")
        if kind == "redis"
        else (MemoryCounts())
    )
    try:
        for name in ("lamp", "lamp", "rug"):
            await counts.record(name)
        drained = await counts.drain()
        assert drained == {"lamp": 2, "rug": 1}
        assert await counts.drain() == {}  # drained exactly once
        await counts.restore(drained)
        await counts.record("lamp")
        assert await counts.drain() == {"lamp": 3, "rug": 1}
    finally:
        await counts.aclose()
        await redis.aclose()


async def test_limiter_and_counters_share_one_client(redis_url: str) -> None:
    services = Services.from_settings(settings_for(None, redis_url=redis_url))
    try:
        limiter_redis = services.rate_limiter.shared.redis  # type: ignore[attr-defined]
        counter_clients = {
            id(buffer.redis)  # type: ignore[attr-defined]
            for buffer in (services.search_counts, services.view_counts, services.search_history)
        }
        assert counter_clients == {id(limiter_redis)}
    finally:
        await services.aclose()


async def test_redis_down_counts_locally_and_loses_nothing(own_redis: RedisProcess) -> None:
    redis = LazyRedis(own_redis.url)
    # A generous timeout: a busy machine must not turn a slow first connection into a
    # fall-back; a stopped server refuses connections at once anyway.
    counts = RedisCounts(redis, "edgemart-test:views", timeout_s=2.0, retry_after_s=0.0)
    before = metrics.count(COUNTER_FALLBACK_METRIC)
    try:
        await counts.record("lamp")
        own_redis.kill()
        for name in ("lamp", "rug"):
            await counts.record(name)  # never raises: counted in this process
        assert metrics.count(COUNTER_FALLBACK_METRIC) == before + 2
        assert await counts.drain() == {"lamp": 1, "rug": 1}  # what this process holds
        await counts.restore({"rug": 1})  # a failed flush, Redis still down: kept locally
        own_redis.start()  # the restarted server kept nothing: its "lamp" is gone with it
        await counts.record("lamp")
        assert metrics.count(COUNTER_FALLBACK_METRIC) == before + 2  # Redis used again
        assert await counts.drain() == {"lamp": 1, "rug": 1}
    finally:
        await counts.aclose()

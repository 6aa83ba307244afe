"""One suite, every backend: memory, Redis, and Upstash through the REST endpoint.

The same request timeline, on the same injected clock, must give the same decisions on each
(psycopg_pool's parametrised-fixture pattern)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.redis import RedisRateLimiter
from edgemart.ratelimit.upstash import UpstashRateLimiter
from edgemart.ratelimit.window import Decision, Policy
from tests.conftest import UPSTASH_TOKEN, FakeClock

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "redis", "upstash"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_limiter(
    kind: str, clock: FakeClock | None, redis_url: str, upstash_url: str
) -> RateLimiter:
    if kind == "memory":
        return MemoryRateLimiter(clock=clock or FakeClock())
    if kind == "redis":
        return RedisRateLimiter(redis_url, clock=clock)
    return UpstashRateLimiter(upstash_url, UPSTASH_TOKEN, clock=clock)


@pytest.fixture
async def limiter_with_clock(
    backend: str, redis_url: str, upstash_url: str
) -> AsyncIterator[tuple[RateLimiter, FakeClock]]:
    clock = FakeClock()
    limiter = make_limiter(backend, clock, redis_url, upstash_url)
    yield limiter, clock
    await limiter.aclose()


def unique_key() -> str:
    return f"ip:test-{uuid.uuid4().hex}"


async def run(
    limiter: RateLimiter, clock: FakeClock, policy: Policy, offsets_s: list[float]
) -> list[Decision]:
    key, start, decisions = unique_key(), clock.now, []
    for offset in offsets_s:
        clock.now = start + offset
        decisions.append(await limiter.check(key, policy))
    return decisions


LOG_TIMELINE = [0, 1, 2, 3, 9.999999, 10, 10.5, 11, 11.000001, 12, 19.999999, 20, 40]


async def test_log_window_boundaries(limiter_with_clock: tuple[RateLimiter, FakeClock]) -> None:
    limiter, clock = limiter_with_clock
    decisions = await run(limiter, clock, Policy("boundary", 3, 10), LOG_TIMELINE)
    assert [d.allowed for d in decisions] == [
        True,
        True,
        True,  # 0, 1, 2 fill the window
        False,  # 3: full
        False,  # 9.999999: the request at 0 is still inside (t-10, t]
        True,  # 10: the request at 0 has left
        False,  # 10.5: 1, 2, 10 inside
        True,  # 11: 1 has left
        False,  # 11.000001
        True,  # 12: 2 has left
        False,  # 19.999999: 10, 11, 12 inside
        True,  # 20: 10 has left
        True,  # 40: all gone
    ]
    assert [d.remaining for d in decisions[:4]] == [2, 1, 0, 0]
    assert decisions[3].retry_after_s == 7  # the request at 0 leaves at 10
    assert decisions[4].retry_after_s == 1  # 1 µs rounds up to a whole second


COUNTER_TIMELINE = [0, 1, 2, 5, 10, 12, 15, 17.5, 19, 25, 31]


async def test_counter_window_boundaries(limiter_with_clock: tuple[RateLimiter, FakeClock]) -> None:
    limiter, clock = limiter_with_clock
    decisions = await run(
        limiter, clock, Policy("counter", 3, 10, algorithm="counter"), COUNTER_TIMELINE
    )
    assert [d.allowed for d in decisions] == [
        True,
        True,
        True,  # window [0,10): 3 admitted
        False,  # 5: full
        False,  # 10: prev 3 weighs 3 at the boundary
        False,  # 12: weighs 2.4; 2.4 + 1 > 3
        True,  # 15: weighs 1.5; admitted (cur 1)
        True,  # 17.5: 0.75 + 1 + 1 <= 3 (cur 2)
        False,  # 19: 0.3 + 2 + 1 > 3
        True,  # 25: prev 2 weighs 1; 1 + 0 + 1 <= 3
        True,  # 31: prev 1 weighs 0.9; 0.9 + 0 + 1 <= 3
    ]
    assert [d.retry_after_s for d in decisions[3:6]] == [9, 4, 2]


@pytest.mark.parametrize("algorithm", ["log", "counter"])
async def test_random_timelines_agree_across_backends(
    algorithm: str, redis_url: str, upstash_url: str
) -> None:
    rng = random.Random(42)
    offsets, now = [], 0.0
    for _ in range(250):
        now += rng.expovariate(1.5)  # about 90 requests a minute against a limit of 20
        offsets.append(round(now, 6))
    policy = Policy("agree", 20, 60, algorithm=algorithm)  # type: ignore[arg-type]
    results = {}
    for kind in BACKENDS:
        clock = FakeClock()
        limiter = make_limiter(kind, clock, redis_url, upstash_url)
        try:
            results[kind] = await run(limiter, clock, policy, offsets)
        finally:
            await limiter.aclose()
    assert results["redis"] == results["memory"]
    assert results["upstash"] == results["memory"]
    assert 0 < sum(d.allowed for d in results["memory"]) < len(offsets)


@pytest.mark.parametrize("kind", ["redis", "upstash"])
async def test_shared_backends_use_the_server_clock(
    kind: str, redis_url: str, upstash_url: str
) -> None:
    limiter = make_limiter(kind, None, redis_url, upstash_url)
    try:
        key, policy = unique_key(), Policy("server-clock", 2, 60)
        decisions = [await limiter.check(key, policy) for _ in range(3)]
    finally:
        await limiter.aclose()
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 59 <= decisions[2].retry_after_s <= 60


@pytest.mark.parametrize("kind", ["redis", "upstash"])
async def test_script_is_reloaded_after_the_server_forgets_it(
    kind: str, redis_url: str, upstash_url: str
) -> None:
    limiter = make_limiter(kind, None, redis_url, upstash_url)
    admin = Redis.from_url(redis_url)
    try:
        policy = Policy("noscript", 5, 60)
        assert (await limiter.check(unique_key(), policy)).allowed
        await admin.script_flush()
        assert (await limiter.check(unique_key(), policy)).allowed
    finally:
        await admin.aclose()
        await limiter.aclose()


async def test_redis_keys_expire_on_their_own(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    admin = Redis.from_url(redis_url)
    try:
        key = unique_key()
        await limiter.check(key, Policy("expiry", 5, 7))
        await limiter.check(key, Policy("expiry-c", 5, 7, algorithm="counter"))
        names = [name async for name in admin.scan_iter(match=f"*{key}*")]
        assert len(names) == 2
        for name in names:
            assert 0 < await admin.pttl(name) <= 14_000
    finally:
        await admin.aclose()
        await limiter.aclose()

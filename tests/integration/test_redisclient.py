"""The shared Redis client's pool against a real Redis: a wait for a free connection ends,
even when the wake-up meant for it was lost (Python 3.11's asyncio.Condition, gh-112202)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from edgemart.redisclient import LazyRedis

pytestmark = pytest.mark.anyio


async def test_a_waiter_whose_wake_up_was_lost_is_answered_within_the_pool_timeout(
    redis_url: str,
) -> None:
    redis = LazyRedis(redis_url, max_connections=1, pool_timeout_s=0.5)
    client = redis.client()
    pool = client.connection_pool
    try:
        held = await pool.get_connection()
        woken = asyncio.ensure_future(client.ping())
        missed = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.1)  # both queued on the pool's Condition, `woken` first
        await pool.release(held)  # notifies `woken` alone
        woken.cancel()  # before it runs: on 3.11 the wake-up dies with it
        done, _ = await asyncio.wait({missed}, timeout=5)
        # Without a pool timeout, `missed` waits for good beside the free connection.
        assert done, "a waiter kept waiting for a connection that was free"
        try:
            assert missed.result() is True  # a Python that passes wake-ups on
        except RedisConnectionError as exc:
            assert "No connection available" in str(exc)
        assert await client.ping()  # the pool itself is fine: the connection is free
    finally:
        await redis.aclose()


async def test_the_pool_timeout_defaults_to_the_socket_timeout(redis_url: str) -> None:
    redis = LazyRedis(redis_url, socket_timeout_s=0.7)
    try:
        assert redis.client().connection_pool.timeout == 0.7
    finally:
        await redis.aclose()

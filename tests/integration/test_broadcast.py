"""The invalidation broadcast's sends against a real Redis: concurrent writes share one
script call, and none of their changes is lost, even when a caller goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from edgemart.broadcast import Broadcast, changes_of
from edgemart.cache import TTLCache
from edgemart.changes import stock_changed
from edgemart.redisclient import LazyRedis
from edgemart.sharedcache import RedisSharedCache
from tests.conftest import RedisProcess
from tests.integration.test_sharedcache import command_counts

pytestmark = pytest.mark.anyio


@pytest.fixture
async def broadcast(own_redis: RedisProcess) -> AsyncIterator[Broadcast]:
    shared = RedisSharedCache(LazyRedis(own_redis.url), namespace="sends", timeout_s=2.0)
    broadcast = Broadcast(shared, shared.redis, TTLCache(), channel=shared.names.channel)
    await broadcast.send(stock_changed(["warm-up"]))  # connects and loads the drop script
    yield broadcast
    await shared.redis.aclose()


@pytest.fixture
async def admin(own_redis: RedisProcess) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


async def published_tags(pubsub: redis.asyncio.client.PubSub) -> set[str]:
    """Every tag the messages published so far name."""
    tags: set[str] = set()
    while (message := await pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            tags |= changes_of(message["data"]).changes.tags
    return tags


@pytest.fixture
async def pubsub(
    admin: redis.asyncio.Redis, broadcast: Broadcast
) -> AsyncIterator[redis.asyncio.client.PubSub]:
    """A subscriber to the broadcast's channel, subscribed before the test sends."""
    pubsub = admin.pubsub()
    await pubsub.subscribe(broadcast.channel)
    assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
    yield pubsub
    await pubsub.aclose()


async def test_concurrent_sends_share_one_script_call(
    broadcast: Broadcast, admin: redis.asyncio.Redis, pubsub: redis.asyncio.client.PubSub
) -> None:
    await admin.config_resetstat()
    writes = [stock_changed([str(n)]) for n in range(20)]
    await asyncio.gather(*(broadcast.send(changes) for changes in writes))
    assert (await command_counts(admin)).get("evalsha") == 1
    assert await published_tags(pubsub) == {tag for changes in writes for tag in changes.tags}


async def test_a_send_that_arrives_during_another_goes_in_the_next(
    broadcast: Broadcast, pubsub: redis.asyncio.client.PubSub
) -> None:
    first = asyncio.ensure_future(broadcast.send(stock_changed(["first"])))
    await asyncio.sleep(0)  # the first send is on its way
    await broadcast.send(stock_changed(["second"]))
    assert first.done()  # the second returned after a send holding it, which followed the first
    assert await published_tags(pubsub) == stock_changed(["first", "second"]).tags


async def test_a_caller_that_goes_away_does_not_take_the_send_with_it(
    broadcast: Broadcast, pubsub: redis.asyncio.client.PubSub
) -> None:
    leaving = asyncio.ensure_future(broadcast.send(stock_changed(["left"])))
    staying = asyncio.ensure_future(broadcast.send(stock_changed(["stayed"])))
    await asyncio.sleep(0)
    leaving.cancel()
    await staying
    assert leaving.cancelled()
    assert await published_tags(pubsub) == stock_changed(["left", "stayed"]).tags

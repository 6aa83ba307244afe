"""The shared cache against a real Redis: entries, the fill lock, drops, and Redis away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from edgemart import metrics
from edgemart.cache import FROM_L2, MISS, STALE, Render, Rendered
from edgemart.changes import listing_changed, popular_searches_changed, stock_changed
from edgemart.redisclient import LazyRedis
from edgemart.sharedcache import (
    RedisSharedCache,
    SharedCacheUnavailableError,
    SharedFill,
    encode,
)
from tests.conftest import RedisProcess, unused_port

pytestmark = pytest.mark.anyio
LOCK_TTL_S = 0.3
TIMEOUT_S = 2.0
"""These tests are about what Redis answers, not about its timeout: give it time under load
(a first call connects and loads its script)."""


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[RedisSharedCache]:
    namespace = f"edgemart-test:{uuid.uuid4().hex}"
    cache = RedisSharedCache(
        LazyRedis(redis_url), namespace=namespace, lock_ttl_s=LOCK_TTL_S, timeout_s=TIMEOUT_S
    )
    yield cache
    client = cache.redis.client()
    async for key in client.scan_iter(match=f"{namespace}:*"):
        await client.delete(key)
    await cache.redis.aclose()


def page(tags: list[str], body: object = "page") -> Rendered:
    return Rendered.of(body, now=1_733_400_000.5, tags=tags)


async def test_a_miss_takes_the_fill_lock_once_and_a_store_fills_and_releases(
    shared: RedisSharedCache,
) -> None:
    first = await shared.lookup("product:1")
    second = await shared.lookup("product:1")
    assert first.rendered is None and first.token is not None and first.since_us > 0
    assert second.rendered is None and second.token is None  # someone is rendering
    rendered = page(["product:1"])
    assert await shared.store("product:1", rendered, 60, first)
    assert (await shared.lookup("product:1")).rendered == rendered
    client = shared.redis.client()
    assert await client.exists(shared.names.lock("product:1")) == 0
    ttl_ms = await client.pttl(shared.names.entry("product:1"))
    assert 59_000 < ttl_ms <= 60_000


async def test_a_drop_removes_every_page_under_its_tags_and_prefixes(
    shared: RedisSharedCache,
) -> None:
    pages = {
        "product:1": ["product:1"],
        "store:oak?": ["store:oak", "product:1", "product:2"],
        "search?q=lamp": ["product:2"],
        "search?q=desk": ["product:3"],
        "product:3": ["product:3"],
        "popular_searches": [],
    }
    for key, tags in pages.items():
        assert await shared.store(key, page(tags), 60, await shared.lookup(key))

    async def present() -> set[str]:
        return {key for key in pages if (await shared.lookup(key)).rendered is not None}

    await shared.drop(stock_changed(["1"]), None)
    assert await present() == {"search?q=lamp", "search?q=desk", "product:3", "popular_searches"}
    await shared.drop(listing_changed("9", "elsewhere"), None)  # every search page
    assert await present() == {"product:3", "popular_searches"}
    await shared.drop(popular_searches_changed(), None)
    assert await present() == {"product:3"}


async def test_a_render_that_began_before_a_drop_of_its_tags_is_not_stored(
    shared: RedisSharedCache,
) -> None:
    """The render may have read the data before the write: storing it would put back what
    the write removed. A page with none of the dropped tags is stored."""
    racing = await shared.lookup("product:1")
    unrelated = await shared.lookup("product:2")
    await shared.drop(stock_changed(["1"]), None)  # the write commits during the render
    assert not await shared.store("product:1", page(["product:1"]), 60, racing)
    assert await shared.store("product:2", page(["product:2"]), 60, unrelated)
    # Not stored, and the refused store still released the lock: the next lookup takes it.
    again = await shared.lookup("product:1")
    assert again.rendered is None and again.token is not None


async def test_a_drop_publishes_its_message_in_the_same_step(shared: RedisSharedCache) -> None:
    client = shared.redis.client()
    pubsub = client.pubsub()
    await pubsub.subscribe(shared.names.channel)
    assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
    await shared.drop(stock_changed(["1"]), '{"hello": 1}')
    message = await pubsub.get_message(timeout=1.0)
    assert message is not None and message["data"] == b'{"hello": 1}'
    await pubsub.aclose()


async def test_a_tag_s_set_forgets_pages_that_expired(shared: RedisSharedCache) -> None:
    for index in range(5):
        key = f"search?q={index}"
        assert await shared.store(key, page(["product:hot"]), 0.05, await shared.lookup(key))
    await asyncio.sleep(0.1)
    key = "product:hot"
    assert await shared.store(key, page(["product:hot"]), 60, await shared.lookup(key))
    members = await shared.redis.client().zrange(shared.names.filed("product:hot"), 0, -1)
    assert members == [shared.names.entry("product:hot").encode()]


def counting_render(body: object) -> tuple[Render, dict[str, int]]:
    """A render of `body`, and how many times it ran."""
    calls = {"n": 0}

    async def render() -> Rendered:
        calls["n"] += 1
        return Rendered.of(body, now=1.0)

    return render, calls


def fills(outcome: str) -> float:
    return metrics.count(metrics.CACHE_FILLS, cache_rule="test", outcome=outcome)


async def test_a_waiting_process_takes_the_other_s_render(shared: RedisSharedCache) -> None:
    holder = await shared.lookup("home")
    assert holder.token is not None
    render, calls = counting_render("mine")

    async def the_other_process_renders() -> None:
        await asyncio.sleep(0.1)
        await shared.store("home", page([], "theirs"), 60, holder)

    waited = fills("waited")
    other = asyncio.ensure_future(the_other_process_renders())
    filled = await SharedFill(shared, wait_s=1.0)("home", 60, "test", render, None)
    await other
    assert filled.source == FROM_L2 and filled.rendered.body == b'"theirs"'
    assert calls["n"] == 0 and fills("waited") == waited + 1


async def test_a_renderer_that_died_is_taken_over_once_its_lock_expires(
    shared: RedisSharedCache,
) -> None:
    dead = await shared.lookup("home")  # took the lock, will never store
    assert dead.token is not None
    render, calls = counting_render("mine")
    took_over = fills("took_over")
    loop = asyncio.get_running_loop()
    started = loop.time()
    filled = await SharedFill(shared, wait_s=2.0)("home", 60, "test", render, None)
    elapsed = loop.time() - started
    assert filled.source == MISS and calls["n"] == 1
    assert fills("took_over") == took_over + 1
    assert LOCK_TTL_S <= elapsed < 2.0  # waited for the lock, not for the whole bound
    assert (await shared.lookup("home")).rendered == filled.rendered  # stored for the fleet


async def test_with_a_copy_of_its_own_a_process_serves_it_instead_of_waiting(
    shared: RedisSharedCache,
) -> None:
    assert (await shared.lookup("home")).token is not None  # another process renders
    render, calls = counting_render("mine")
    mine = page([], "my last good copy")
    filled = await SharedFill(shared, wait_s=1.0)("home", 60, "test", render, mine)
    assert (filled.source, filled.rendered, calls["n"]) == (STALE, mine, 0)


async def test_after_the_bounded_wait_a_process_renders_itself(redis_url: str) -> None:
    """The holder keeps its lock past the wait (a long lock): nobody waits longer."""
    namespace = f"edgemart-test:{uuid.uuid4().hex}"
    shared = RedisSharedCache(
        LazyRedis(redis_url), namespace=namespace, lock_ttl_s=30, timeout_s=TIMEOUT_S
    )
    try:
        assert (await shared.lookup("home")).token is not None
        render, calls = counting_render("mine")
        timed_out = fills("timed_out")
        filled = await SharedFill(shared, wait_s=0.2)("home", 60, "test", render, None)
        assert filled.source == MISS and calls["n"] == 1
        assert fills("timed_out") == timed_out + 1
    finally:
        await shared.redis.client().delete(shared.names.lock("home"))
        await shared.redis.aclose()


async def test_without_redis_a_fill_renders_and_redis_is_left_alone_a_while() -> None:
    shared = RedisSharedCache(
        LazyRedis(f"redis://127.0.0.1:{unused_port()}/0"), namespace="nowhere", timeout_s=0.5
    )
    errors = metrics.count(metrics.SHARED_CACHE_ERRORS, operation="lookup")
    unavailable = metrics.count(metrics.CACHE_LOOKUPS, layer="l2", result="unavailable")
    render, calls = counting_render("from the database")
    fill = SharedFill(shared, wait_s=1.0)
    for _ in range(3):
        filled = await fill("home", 60, "test", render, None)
        assert filled.source == MISS
    assert calls["n"] == 3 and not shared.reachable()
    # One attempt failed; the next two did not try.
    assert metrics.count(metrics.SHARED_CACHE_ERRORS, operation="lookup") == errors + 1
    assert metrics.count(metrics.CACHE_LOOKUPS, layer="l2", result="unavailable") == unavailable + 3
    with pytest.raises(SharedCacheUnavailableError):
        await shared.drop(stock_changed(["1"]), None)
    await shared.redis.aclose()


async def test_an_unreadable_entry_is_not_served_and_counted(redis_url: str) -> None:
    namespace = f"edgemart-test:{uuid.uuid4().hex}"
    shared = RedisSharedCache(
        LazyRedis(redis_url), namespace=namespace, retry_after_s=0.0, timeout_s=TIMEOUT_S
    )
    client = shared.redis.client()
    errors = metrics.count(metrics.SHARED_CACHE_ERRORS, operation="lookup")
    try:
        await client.set(shared.names.entry("home"), b"garbage")
        with pytest.raises(SharedCacheUnavailableError):
            await shared.lookup("home")
        assert metrics.count(metrics.SHARED_CACHE_ERRORS, operation="lookup") == errors + 1
        await client.set(shared.names.entry("home"), encode(page([])))
        assert (await shared.lookup("home")).rendered == page([])
    finally:
        await client.delete(shared.names.entry("home"))
        await shared.redis.aclose()


async def test_scripts_are_loaded_again_after_a_restart(own_redis: RedisProcess) -> None:
    shared = RedisSharedCache(LazyRedis(own_redis.url), namespace="restart", timeout_s=TIMEOUT_S)
    found = await shared.lookup("home")
    await shared.store("home", page([]), 60, found)
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    await admin.script_flush()
    await admin.aclose()
    assert (await shared.lookup("home")).rendered == page([])
    await shared.redis.aclose()


class SlowToBuild(LazyRedis):
    """A client whose first building takes longer than the lookup timeout, as a cold
    process's import of redis-py does."""

    def _build(self) -> redis.asyncio.Redis:
        import time

        time.sleep(0.12)
        return super()._build()


async def test_building_the_client_is_not_counted_against_the_lookup_timeout(
    redis_url: str,
) -> None:
    shared = RedisSharedCache(
        SlowToBuild(redis_url), namespace=f"edgemart-test:{uuid.uuid4().hex}", timeout_s=0.1
    )
    try:
        first = await shared.lookup("home")
        assert first.rendered is None and first.token is not None  # asked Redis, got the lock
        assert shared.reachable()
    finally:
        await shared.redis.aclose()


async def command_counts(admin: redis.asyncio.Redis) -> dict[str, int]:
    """How many times Redis ran each command since its stats were reset (commands a script
    runs included)."""
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


async def test_a_hit_runs_no_script_and_a_miss_takes_the_lock_once(
    own_redis: RedisProcess,
) -> None:
    shared = RedisSharedCache(LazyRedis(own_redis.url), namespace="counted", timeout_s=TIMEOUT_S)
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        await shared.lookup("warm-up")  # connects and loads the lookup script
        await admin.config_resetstat()
        missed = await shared.lookup("home")
        after_miss = await command_counts(admin)
        # One GET by the client, one by the script, which then took the lock: one SET.
        assert missed.token is not None
        assert (after_miss.get("evalsha"), after_miss.get("get"), after_miss.get("set")) == (
            1,
            2,
            1,
        )
        assert await shared.store("home", page([]), 60, missed)
        await admin.config_resetstat()
        assert (await shared.lookup("home")).rendered == page([])
        after_hit = await command_counts(admin)
        assert after_hit.get("get") == 1
        assert "evalsha" not in after_hit and "eval" not in after_hit
    finally:
        await admin.aclose()
        await shared.redis.aclose()


async def test_a_tenant_s_drop_removes_its_pages_and_leaves_another_tenant_s(
    shared: RedisSharedCache,
) -> None:
    """`store:oak` and `search?` are in every marketplace: a listing in acme's `oak` drops
    acme's store page and searches only."""
    from edgemart.changes import listing_created
    from edgemart.tenancy import DEFAULT_TENANT
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    tenants = (DEFAULT_TENANT, ACME, GLOBEX)
    pages = {"store:oak?": ["store:oak"], "search?q=lamp": ["product:2"], "product:3": []}
    for tenant in tenants:
        for key, tags in pages.items():
            own_key, own_tags = scoped(tenant, key), [scoped(tenant, tag) for tag in tags]
            assert await shared.store(own_key, page(own_tags), 60, await shared.lookup(own_key))

    async def present() -> set[tuple[str, str]]:
        return {
            (tenant.slug, key)
            for tenant in tenants
            for key in pages
            if (await shared.lookup(scoped(tenant, key))).rendered is not None
        }

    everything = {(tenant.slug, key) for tenant in tenants for key in pages}
    await shared.drop(listing_created("oak", tenant=ACME), None)
    assert await present() == everything - {("acme", "store:oak?"), ("acme", "search?q=lamp")}
    await shared.drop(listing_created("oak"), None)  # the default tenant's
    assert await present() == everything - {
        (slug, key) for slug in ("acme", "default") for key in ("store:oak?", "search?q=lamp")
    }

"""When a process trusts its own cache (with an injected clock), and the broadcast's messages."""

from __future__ import annotations

import json

import pytest

from edgemart import metrics
from edgemart.broadcast import REDIS, Broadcast, Subscription, changes_of, message_of
from edgemart.cache import Rendered, TTLCache
from edgemart.changes import Changes, listing_changed, stock_changed
from edgemart.redisclient import LazyRedis
from edgemart.sharedcache import RedisSharedCache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def cache_trusting(subscription: Subscription, clock: Clock) -> TTLCache:
    return TTLCache(clock=clock, trust=subscription.covers)


def page(clock: Clock) -> Rendered:
    return Rendered.of({"stock": 3}, now=clock.now, tags=["product:1"])


def test_without_a_subscription_an_entry_is_trusted_for_the_window_only() -> None:
    """A Lambda environment (or a process whose subscription is down): within the window the
    entry is served; after it, the cache says miss (ask the shared cache) while the entry
    stays as the last good copy."""
    clock, subscription = Clock(), Subscription(window_s=1.0)
    cache = cache_trusting(subscription, clock)
    cache.put("product:1", page(clock), ttl_s=120)
    clock.now += 1.0
    assert cache.fresh("product:1") is not None
    clock.now += 0.01
    assert cache.fresh("product:1") is None
    assert cache.last_good("product:1") is not None
    assert cache.trusted_last_good("product:1") is None  # not even to serve while waiting


def test_a_live_subscription_covers_entries_filled_after_it_began() -> None:
    clock, subscription = Clock(), Subscription(window_s=1.0)
    cache = cache_trusting(subscription, clock)
    cache.put("before", page(clock), ttl_s=120)
    clock.now += 0.5
    subscription.subscribed(clock.now)
    cache.put("after", page(clock), ttl_s=120)
    for _ in range(10):  # a minute of pongs, each answering a ping sent 0.25 s earlier
        clock.now += 6.0
        subscription.confirmed(clock.now - 0.25)
        assert cache.fresh("after") is not None
    # Filled before the subscription began: what was published before it was never heard.
    assert cache.fresh("before") is None


def test_an_unanswered_subscription_stops_covering_after_the_window() -> None:
    """A subscription that stopped answering pings (a dead socket, a frozen process) proves
    nothing: its entries fall back to the window rule."""
    clock, subscription = Clock(), Subscription(window_s=1.0)
    cache = cache_trusting(subscription, clock)
    subscription.subscribed(clock.now)
    cache.put("k", page(clock), ttl_s=120)
    clock.now += 2.0
    subscription.confirmed(clock.now - 0.9)
    assert cache.fresh("k") is not None
    clock.now += 0.2  # the last pong answers a ping sent 1.1 s ago
    assert cache.fresh("k") is None
    subscription.confirmed(clock.now - 0.1)
    assert cache.fresh("k") is not None


def test_after_a_drop_only_entries_filled_under_the_new_subscription_are_covered() -> None:
    """What was published while the subscription was down is lost: entries from before the
    resubscription are read again from the shared cache (after the window)."""
    clock, subscription = Clock(), Subscription(window_s=1.0)
    cache = cache_trusting(subscription, clock)
    subscription.subscribed(clock.now)
    cache.put("old", page(clock), ttl_s=120)
    clock.now += 5.0
    subscription.dropped()
    subscription.confirmed(clock.now)  # a late pong of the old connection proves nothing
    assert cache.fresh("old") is None
    clock.now += 1.0
    subscription.subscribed(clock.now)
    cache.put("new", page(clock), ttl_s=120)
    clock.now += 3.0
    subscription.confirmed(clock.now - 0.2)
    assert cache.fresh("old") is None
    assert cache.fresh("new") is not None


def test_expiry_still_applies_to_trusted_entries() -> None:
    clock, subscription = Clock(), Subscription(window_s=1.0)
    cache = cache_trusting(subscription, clock)
    subscription.subscribed(clock.now)
    cache.put("k", page(clock), ttl_s=30)
    clock.now += 30
    subscription.confirmed(clock.now)
    assert cache.fresh("k") is None
    assert cache.trusted_last_good("k") is not None  # expired, but no write can have hit it


def test_a_message_carries_the_changes_and_who_sent_them() -> None:
    changes = listing_changed("p1", "oak-shop")
    message = message_of(changes, "origin-1")
    assert json.loads(message) == {
        "origin": "origin-1",
        "tags": ["product:p1", "store:oak-shop"],
        "prefixes": ["search?"],
    }
    assert changes_of(message.encode()) == ("origin-1", changes, False)


def test_a_tenants_message_says_so_and_reads_as_no_changes_to_an_older_process() -> None:
    message = message_of(Changes(), "origin-1", tenants_changed=True)
    document = json.loads(message)
    assert document == {"origin": "origin-1", "tags": [], "prefixes": [], "tenants": True}
    assert changes_of(message) == ("origin-1", Changes(), True)


@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        b"[]",
        b'{"tags": [], "prefixes": []}',
        b'{"origin": "o", "tags": "product:1", "prefixes": []}',
        b'{"origin": "o", "tags": [1], "prefixes": []}',
        b'{"origin": "o", "tags": [], "prefixes": ["nowhere?"]}',  # not a known prefix
        b'{"origin": "o", "tags": [], "prefixes": [], "tenants": "yes"}',
    ],
)
def test_malformed_messages_are_refused(message: bytes) -> None:
    with pytest.raises(ValueError):
        changes_of(message)


def broadcast_over(cache: TTLCache) -> Broadcast:
    """A broadcast that never connects: receiving needs no Redis."""
    redis = LazyRedis("redis://127.0.0.1:1/0")
    shared = RedisSharedCache(redis, namespace="unit")
    return Broadcast(shared, redis, cache, channel=shared.names.channel)


def test_another_process_s_changes_are_applied_and_counted_its_own_are_skipped() -> None:
    clock = Clock()
    cache = TTLCache(clock=clock)
    broadcast = broadcast_over(cache)
    cache.put("product:1", page(clock), ttl_s=60)
    cache.put("product:2", Rendered.of({}, now=clock.now, tags=["product:2"]), ttl_s=60)
    received = metrics.count(metrics.INVALIDATIONS_RECEIVED, transport=REDIS)
    broadcast.receive(message_of(stock_changed(["1"]), broadcast.origin))
    assert cache.fresh("product:1") is not None  # its own: applied when it was sent
    broadcast.receive(message_of(stock_changed(["1"]), "another process"))
    assert cache.fresh("product:1") is None and cache.fresh("product:2") is not None
    assert metrics.count(metrics.INVALIDATIONS_RECEIVED, transport=REDIS) == received + 1


def test_an_unreadable_message_clears_the_cache_rather_than_guess() -> None:
    clock = Clock()
    cache = TTLCache(clock=clock)
    cache.put("product:1", page(clock), ttl_s=60)
    cache.put("home", Rendered.of({}, now=clock.now), ttl_s=60)
    broadcast_over(cache).receive(b"\xff garbage")
    assert len(cache) == 0


def test_changes_with_nothing_in_them_are_falsy() -> None:
    assert not Changes() and stock_changed(["1"])


def test_a_tenant_s_changes_travel_scoped_and_drop_only_its_pages() -> None:
    from edgemart.changes import listing_created
    from edgemart.tenantscope import scoped
    from tests.support.tenants import ACME, GLOBEX

    changes = listing_created("shoes", tenant=ACME)
    heard = changes_of(message_of(changes, "elsewhere")).changes
    assert heard == changes
    clock = Clock()
    cache = TTLCache(clock=clock)
    broadcast = broadcast_over(cache)
    for tenant in (ACME, GLOBEX):
        tags = [scoped(tenant, "store:shoes")]
        cache.put(scoped(tenant, "store:shoes?"), Rendered.of({}, now=clock.now, tags=tags), 60)
        cache.put(scoped(tenant, "search?q=x"), Rendered.of({}, now=clock.now), 60)
    broadcast.receive(message_of(changes, "another process"))
    assert cache.fresh(scoped(ACME, "store:shoes?")) is None
    assert cache.fresh(scoped(ACME, "search?q=x")) is None
    assert cache.fresh(scoped(GLOBEX, "store:shoes?")) is not None
    assert cache.fresh(scoped(GLOBEX, "search?q=x")) is not None


def test_another_process_s_tenants_message_empties_the_directory_and_leaves_the_pages() -> None:
    clock = Clock()
    cache = TTLCache(clock=clock)
    broadcast = broadcast_over(cache)
    heard: list[str] = []
    broadcast.on_tenants_changed = lambda: heard.append("tenants")
    broadcast.on_receive = lambda: heard.append("pages")
    cache.put("product:1", page(clock), ttl_s=60)
    broadcast.receive(message_of(Changes(), broadcast.origin, tenants_changed=True))
    assert heard == []  # its own: applied when it was sent
    broadcast.receive(message_of(Changes(), "another process", tenants_changed=True))
    assert heard == ["tenants"]
    assert cache.fresh("product:1") is not None
    broadcast.receive(b"\xff garbage")
    assert heard == ["tenants", "pages", "tenants"]


def test_live_channels_travel_with_the_changes_and_stale_no_page() -> None:
    from edgemart.changes import order_status_changed, stock_changed, stock_pushed

    changes = stock_changed(["p1"]) | stock_pushed(["p1"]) | order_status_changed(["o1"])
    origin, received, _ = changes_of(message_of(changes, "elsewhere"))
    assert (origin, received) == ("elsewhere", changes)
    assert received.channels == {
        "00000000-0000-0000-0000-000000000001/product:p1",
        "00000000-0000-0000-0000-000000000001/order:o1",
    }
    only_live = order_status_changed(["o1"])
    assert only_live and not only_live.stales_pages and only_live.marks == []
    # A process that predates live updates sends no channels: none are read.
    assert changes_of('{"origin":"old","tags":["product:p1"],"prefixes":[]}')[1].channels == set()

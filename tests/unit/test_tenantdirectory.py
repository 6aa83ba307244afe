"""The per-process host → tenant directory: bounded, unknown hosts remembered, trusted only as
long as the broadcast's rule allows, and emptied by a change."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from edgemart.broadcast import Subscription
from edgemart.tenancy import Tenant
from edgemart.tenantdirectory import MISS, TenantDirectory
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

SHOP = Tenant(uuid.uuid4(), "shop")
OTHER = Tenant(uuid.uuid4(), "other")


class Domains:
    """tenant_domains as a dict, counting the lookups the directory makes."""

    def __init__(self, **domains: Tenant) -> None:
        self.domains = dict(domains)
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None
        """When set, a lookup waits for it (a query in flight)."""

    async def tenant_of_domain(self, domain: str) -> Tenant | None:
        self.asked.append(domain)
        answer = self.domains.get(domain)
        if self.gate is not None:
            await self.gate.wait()
        return answer


def directory(
    domains: Domains, clock: FakeClock, subscription: Subscription | None = None, **more: int
) -> TenantDirectory:
    trusts = (subscription or Subscription(window_s=0.8)).covers
    return TenantDirectory(domains, trusts=trusts, clock=clock, **more)


async def test_a_known_host_is_looked_up_once() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock)
    assert hosts.cached("shop.test") is MISS
    assert await hosts.tenant_of("shop.test") == SHOP
    clock.now += 0.5
    assert hosts.cached("shop.test") == SHOP
    assert await hosts.tenant_of("shop.test") == SHOP
    assert domains.asked == ["shop.test"]


async def test_an_unknown_host_is_remembered_too() -> None:
    domains, clock = Domains(), FakeClock()
    hosts = directory(domains, clock)
    for _ in range(3):
        assert await hosts.tenant_of("nobody.test") is None
    assert hosts.cached("nobody.test") is None
    assert domains.asked == ["nobody.test"]


async def test_without_a_subscription_an_entry_is_trusted_for_the_window_only() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock)
    await hosts.tenant_of("shop.test")
    clock.now += 0.8
    assert hosts.cached("shop.test") == SHOP
    domains.domains["shop.test"] = OTHER  # moved, and this process heard nothing
    clock.now += 0.01
    assert hosts.cached("shop.test") is MISS
    assert await hosts.tenant_of("shop.test") == OTHER
    assert domains.asked == ["shop.test", "shop.test"]


async def test_a_live_subscription_keeps_entries_trusted_until_the_maximum_age() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    subscription = Subscription(window_s=0.8)
    subscription.subscribed(clock.now)
    hosts = directory(domains, clock, subscription, max_age_s=60)
    await hosts.tenant_of("shop.test")
    for _ in range(59):
        clock.now += 1
        subscription.confirmed(clock.now)  # a pong: nothing published was missed
        assert hosts.cached("shop.test") == SHOP
    clock.now += 1.5
    subscription.confirmed(clock.now)
    assert hosts.cached("shop.test") is MISS  # older than max_age_s, whatever the pongs


async def test_a_subscription_that_stopped_answering_trusts_for_the_window_only() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    subscription = Subscription(window_s=0.8)
    subscription.subscribed(clock.now)
    hosts = directory(domains, clock, subscription)
    await hosts.tenant_of("shop.test")
    clock.now += 2  # no pong since: a message may have been lost
    assert hosts.cached("shop.test") is MISS


async def test_a_change_forgets_every_host() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock)
    await hosts.tenant_of("shop.test")
    await hosts.tenant_of("nobody.test")
    hosts.changed()
    assert len(hosts) == 0
    assert hosts.cached("shop.test") is MISS and hosts.cached("nobody.test") is MISS


async def test_a_lookup_in_flight_across_a_change_is_not_remembered() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock)
    domains.gate = asyncio.Event()
    lookup = asyncio.ensure_future(hosts.tenant_of("shop.test"))
    await asyncio.sleep(0)  # the query is sent, with the old answer
    domains.domains["shop.test"] = OTHER
    hosts.changed()
    domains.gate.set()
    assert await lookup == SHOP  # this request had already asked
    assert hosts.cached("shop.test") is MISS  # but nobody is served it again


async def test_an_entry_s_age_counts_from_when_its_query_was_sent() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock)
    domains.gate = asyncio.Event()
    lookup = asyncio.ensure_future(hosts.tenant_of("shop.test"))
    await asyncio.sleep(0)
    clock.now += 0.7  # a slow query
    domains.gate.set()
    await lookup
    clock.now += 0.2
    assert hosts.cached("shop.test") is MISS  # 0.9 s since the database answered for it


async def test_a_flood_of_made_up_hosts_keeps_the_directory_bounded() -> None:
    domains, clock = Domains(**{"shop.test": SHOP}), FakeClock()
    hosts = directory(domains, clock, max_hosts=100)
    await hosts.tenant_of("shop.test")
    for number in range(1000):
        assert await hosts.tenant_of(f"h{number}.flood.test") is None
        # The real shop stays: each request for it makes it the most recently used.
        assert await hosts.tenant_of("shop.test") == SHOP
        assert len(hosts) <= 100
    assert len(hosts) == 100
    assert domains.asked.count("shop.test") == 1
    assert hosts.cached("h0.flood.test") is MISS  # the least recently used went first
    assert hosts.cached("h999.flood.test") is None

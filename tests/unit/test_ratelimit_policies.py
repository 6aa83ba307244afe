"""edgemart.ratelimit.policies: which policy a request counts against, and which backend
the settings build (with real Redis where the backend talks to it)."""

from __future__ import annotations

import re
import uuid

import pytest

from edgemart.ratelimit.fallback import FallbackRateLimiter
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.ratelimit.memory import MemoryRateLimiter
from edgemart.ratelimit.policies import WINDOW_S, RateLimitTable, build_rate_limiter
from edgemart.ratelimit.redis import RedisRateLimiter
from edgemart.ratelimit.upstash import UpstashRateLimiter
from edgemart.ratelimit.window import Policy
from edgemart.redisclient import LazyRedis
from edgemart.routetable import ROUTES, RouteSpec
from edgemart.settings import Settings, SettingsError

SEARCH = Policy("search", 60, 60)
STORE = Policy("store", 100, 60)
LISTINGS = Policy("listings", 30, 60, "user")
POLICIES = {policy.name: policy for policy in (SEARCH, STORE, LISTINGS)}


def route(method: str, path: str, group: str | None) -> RouteSpec:
    return RouteSpec(
        method,
        path,
        "function",
        "handler",
        "summary",
        rate_limit=group,
        cache_rule=None,
        auth="none",
    )


TABLE_ROUTES = [
    route("GET", "/marketplace/search", "search"),
    route("GET", "/stores/{slug}", "store"),
    route("GET", "/products/{product_id}", "store"),
    route("PATCH", "/products/{product_id}", "listings"),
    route("GET", "/health", None),
    route("GET", "/health/live", None),
    route("GET", "/mixed/a", "search"),
    route("GET", "/mixed/b", "store"),
    route("GET", "/retired", "admin"),  # a group with no policy (its limit switched off)
]


@pytest.fixture
def table() -> RateLimitTable:
    return RateLimitTable(POLICIES, TABLE_ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        # A route counts against its group's policy (GET answers HEAD too).
        ("GET", "/marketplace/search", SEARCH),
        ("HEAD", "/marketplace/search", SEARCH),
        # Path parameters match one segment, and methods pick the group.
        ("GET", "/stores/acme", STORE),
        ("GET", "/products/42", STORE),
        ("PATCH", "/products/42", LISTINGS),
        # Unlimited routes, and their segment, have no policy.
        ("GET", "/health", None),
        ("GET", "/health/live", None),
        ("GET", "/health/unknown", None),
        # Probing unknown paths (404) or methods (405) under a limited prefix is not free:
        # they spend their segment's quota.
        ("GET", "/marketplace/nothing-here", SEARCH),
        ("DELETE", "/marketplace/search", SEARCH),
        ("GET", "/stores/acme/extra/segments", STORE),
        ("DELETE", "/products/42", STORE),
        # A segment whose GET routes disagree has no fallback.
        ("GET", "/mixed/a", SEARCH),
        ("GET", "/mixed/b", STORE),
        ("GET", "/mixed/c", None),
        # An unknown first segment is unlimited.
        ("GET", "/nowhere", None),
    ],
)
def test_the_policy_a_request_counts_against(
    table: RateLimitTable, method: str, path: str, expected: Policy | None
) -> None:
    assert table.policy_for(method, path) is expected


def test_a_group_without_a_policy_is_unlimited(table: RateLimitTable) -> None:
    assert table.group_for("GET", "/retired") == "admin"
    assert table.policy_for("GET", "/retired") is None


def test_answers_stay_right_after_the_cache_fills_and_is_cleared(table: RateLimitTable) -> None:
    paths = [f"/stores/store-{index}" for index in range(10_000)]
    assert all(table.policy_for("GET", path) is STORE for path in paths)
    assert table.policy_for("GET", "/health") is None
    assert all(table.policy_for("GET", path) is STORE for path in paths[:100])


def test_every_limited_route_of_the_route_table_gets_its_groups_policy() -> None:
    table = RateLimitTable.from_settings(Settings())
    for spec in ROUTES:
        path = re.sub(r"\{\w+\}", "value-1", spec.path)
        expected = table.policies.get(spec.rate_limit) if spec.rate_limit else None
        assert table.policy_for(spec.method, path) is expected, spec.label


def test_default_policies_come_from_the_groups() -> None:
    table = RateLimitTable.from_settings(Settings())
    assert table.policies == {
        group: Policy(group, limit, WINDOW_S, key, "log")
        for group, (limit, key) in DEFAULT_POLICIES.items()
    }


def test_overrides_change_numbers_keep_the_key_and_zero_switches_a_group_off() -> None:
    settings = Settings(rate_limit_overrides=(("listings", 5, 10), ("search", 0, 60)))
    policies = RateLimitTable.from_settings(settings).policies
    assert policies["listings"] == Policy("listings", 5, 10, "user", "log")
    assert "search" not in policies
    assert policies["home"] == Policy("home", DEFAULT_POLICIES["home"][0], WINDOW_S, "ip", "log")


def test_the_counter_algorithm_applies_to_every_group() -> None:
    policies = RateLimitTable.from_settings(Settings(rate_limit_algorithm="counter")).policies
    assert {policy.algorithm for policy in policies.values()} == {"counter"}


def test_without_a_shared_store_the_limiter_is_the_memory_one() -> None:
    limiter = build_rate_limiter(Settings(rate_limit_memory_max_keys=123))
    assert isinstance(limiter, MemoryRateLimiter)
    assert limiter.max_keys == 123
    forced = build_rate_limiter(Settings(rate_limit_backend="memory", redis_url="redis://x:1"))
    assert isinstance(forced, MemoryRateLimiter)


@pytest.mark.anyio
async def test_a_redis_url_puts_redis_in_front_of_the_memory_limiter(redis_url: str) -> None:
    limiter = build_rate_limiter(Settings(redis_url=redis_url, rate_limit_timeout_ms=2000))
    assert isinstance(limiter, FallbackRateLimiter)
    assert isinstance(limiter.shared, RedisRateLimiter)
    assert isinstance(limiter.local, MemoryRateLimiter)
    assert limiter.timeout_s == 2.0
    try:
        key = f"ip:policies-test-{uuid.uuid4().hex}"
        decisions = [await limiter.check(key, Policy("search", 2, 60)) for _ in range(3)]
    finally:
        await limiter.aclose()
    # Answered by Redis itself, not the local fall-back.
    assert [(d.allowed, d.remaining, d.fallback) for d in decisions] == [
        (True, 1, False),
        (True, 0, False),
        (False, 0, False),
    ]


@pytest.mark.anyio
async def test_the_redis_backend_uses_the_process_client_when_given(redis_url: str) -> None:
    shared_client = LazyRedis(redis_url)
    limiter = build_rate_limiter(Settings(redis_url=redis_url), redis=shared_client)
    assert isinstance(limiter, FallbackRateLimiter)
    assert isinstance(limiter.shared, RedisRateLimiter)
    assert limiter.shared.redis is shared_client
    await limiter.aclose()


def test_upstash_credentials_pick_upstash_when_auto() -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        upstash_redis_rest_url="https://upstash.example",
        upstash_redis_rest_token="token",
    )
    limiter = build_rate_limiter(settings)
    assert isinstance(limiter, FallbackRateLimiter)
    assert isinstance(limiter.shared, UpstashRateLimiter)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(rate_limit_backend="redis"),
        Settings(rate_limit_backend="upstash", upstash_redis_rest_url="https://upstash.example"),
        Settings(rate_limit_backend="upstash", upstash_redis_rest_token="token"),
    ],
)
def test_a_named_backend_without_its_address_is_refused(settings: Settings) -> None:
    with pytest.raises(SettingsError):
        build_rate_limiter(settings)

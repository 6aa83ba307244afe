"""Which routes are limited, how much, keyed by what (DESIGN.md §6), and the limiter to use.

The table below is the single source of the default limits; `RATE_LIMIT_<GROUP>` overrides a
group's numbers (`off` removes its limit). Routes are matched by method and path before the
router runs, so a 404 under a limited prefix still counts against that prefix's quota.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.window import Algorithm, KeyKind, Policy
from edgemart.settings import Settings, SettingsError

if TYPE_CHECKING:
    from edgemart.redisclient import LazyRedis

WINDOW_S = 60
_CACHE_SIZE = 4096

DEFAULT_POLICIES: Mapping[str, tuple[int, KeyKind]] = {
    "home": (200, "ip"),
    "search": (60, "ip"),
    "store": (100, "ip"),
    "listings": (30, "user"),
    "purchases": (20, "user"),
    "admin": (30, "user"),
}

# (methods or None for any, full-match path pattern, group); the first match wins.
ROUTE_GROUPS: tuple[tuple[frozenset[str] | None, str, str], ...] = (
    (frozenset({"POST"}), r"/stores", "listings"),
    (frozenset({"POST"}), r"/products", "listings"),
    (frozenset({"PATCH"}), r"/products/[^/]+", "listings"),
    (None, r"/stores/.+", "store"),
    (frozenset({"GET", "HEAD"}), r"/products/[^/]+", "store"),
    (None, r"/marketplace/home", "home"),
    (None, r"/marketplace/search(?:/popular)?", "search"),
    (None, r"/purchases(?:/.*)?", "purchases"),
    (None, r"/wallet", "purchases"),
    (None, r"/admin/.+", "admin"),
)


class RateLimitTable:
    def __init__(self, policies: Mapping[str, Policy]) -> None:
        self.policies = dict(policies)
        self._cache: dict[tuple[str, str], Policy | None] = {}
        # Rules indexed by the path's first segment, so a request tries one or two patterns.
        self._rules: dict[str, list[tuple[frozenset[str] | None, re.Pattern[str], str]]] = {}
        for methods, pattern, group in ROUTE_GROUPS:
            first_segment = re.split(r"[/(?|]", pattern.lstrip("/"), maxsplit=1)[0]
            self._rules.setdefault(first_segment, []).append((methods, re.compile(pattern), group))

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimitTable:
        algorithm: Algorithm = "counter" if settings.rate_limit_algorithm == "counter" else "log"
        policies = {
            group: Policy(group, limit, WINDOW_S, key, algorithm)
            for group, (limit, key) in DEFAULT_POLICIES.items()
        }
        for group, limit, window_s in settings.rate_limit_overrides:
            if limit == 0:
                policies.pop(group, None)
            else:
                policies[group] = dataclasses.replace(
                    policies[group], limit=limit, window_s=window_s
                )
        return cls(policies)

    def policy_for(self, method: str, path: str) -> Policy | None:
        cache_key = (method, path)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        policy = self._match(method, path)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()  # crude but O(1); paths with ids churn through it
        self._cache[cache_key] = policy
        return policy

    def _match(self, method: str, path: str) -> Policy | None:
        first_segment = path[1:].split("/", 1)[0]
        for methods, pattern, group in self._rules.get(first_segment, ()):
            if (methods is None or method in methods) and pattern.fullmatch(path):
                return self.policies.get(group)
        return None


def build_rate_limiter(settings: Settings, *, redis: LazyRedis | None = None) -> RateLimiter:
    """The configured backend, with the local limiter behind any shared one. `redis` is the
    process's shared client, used by the Redis backend when given."""
    from edgemart.ratelimit.memory import MemoryRateLimiter

    local = MemoryRateLimiter(max_keys=settings.rate_limit_memory_max_keys)
    backend = settings.rate_limit_backend
    if backend == "auto":
        if settings.upstash_redis_rest_url and settings.upstash_redis_rest_token:
            backend = "upstash"
        elif settings.redis_url:
            backend = "redis"
        else:
            backend = "memory"
    if backend == "memory":
        return local
    shared: RateLimiter
    if backend == "redis":
        if not settings.redis_url:
            raise SettingsError("RATE_LIMIT_BACKEND=redis needs REDIS_URL")
        from edgemart.ratelimit.redis import RedisRateLimiter

        shared = RedisRateLimiter(settings.redis_url, redis=redis)
    else:
        if not (settings.upstash_redis_rest_url and settings.upstash_redis_rest_token):
            raise SettingsError(
                "RATE_LIMIT_BACKEND=upstash needs UPSTASH_REDIS_REST_URL and "
                "UPSTASH_REDIS_REST_TOKEN"
            )
        from edgemart.ratelimit.upstash import UpstashRateLimiter

        shared = UpstashRateLimiter(
            settings.upstash_redis_rest_url, settings.upstash_redis_rest_token
        )
    from edgemart.ratelimit.fallback import FallbackRateLimiter

    return FallbackRateLimiter(shared, local, timeout_s=settings.rate_limit_timeout_ms / 1000)

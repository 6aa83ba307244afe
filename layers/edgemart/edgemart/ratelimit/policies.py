"""Which routes are limited, how much, keyed by what, and the limiter to use.

The default limits are `edgemart.ratelimit.groups.DEFAULT_POLICIES`, each route's group is in
the route table (edgemart.routetable); `RATE_LIMIT_<GROUP>` overrides a group's numbers (`off`
removes its limit). Routes are matched by method and path template before the router runs. A
request no route of the table answers (an unknown path or method under a known first segment,
a 404 or 405) counts against the group of that segment's GET routes when they share one, so
probing unknown paths under a limited prefix still spends that prefix's quota.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from edgemart.ratelimit.base import RateLimiter
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.ratelimit.window import Algorithm, Policy
from edgemart.routetable import ROUTES, RouteSpec
from edgemart.routing import WILDCARD_SEGMENT, first_segment, methods_of, template_pattern
from edgemart.settings import Settings, SettingsError

if TYPE_CHECKING:
    from edgemart.redisclient import LazyRedis
    from edgemart.tracing.tracer import Tracing

WINDOW_S = 60
_CACHE_SIZE = 4096


class RateLimitTable:
    def __init__(
        self, policies: Mapping[str, Policy], routes: Iterable[RouteSpec] = ROUTES
    ) -> None:
        self.policies = dict(policies)
        self._cache: dict[tuple[str, str], Policy | None] = {}
        # Rules indexed by the path's first segment, so a request tries a few patterns.
        self._rules: dict[str, list[tuple[frozenset[str], re.Pattern[str], str | None]]] = {}
        get_groups: dict[str, set[str | None]] = {}
        for route in routes:
            segment = first_segment(route.path)
            if route.method == "GET":
                get_groups.setdefault(segment, set()).add(route.rate_limit)
            rule = (methods_of(route.method), template_pattern(route.path), route.rate_limit)
            self._rules.setdefault(segment, []).append(rule)
        self._fallback = {
            segment: group
            for segment, (group, *others) in get_groups.items()
            if group is not None and not others
        }

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
        return self.policies.get(self.group_for(method, path) or "")

    def group_for(self, method: str, path: str) -> str | None:
        segment = path[1:].split("/", 1)[0]
        for key in (segment, WILDCARD_SEGMENT):
            for methods, pattern, group in self._rules.get(key, ()):
                if method in methods and pattern.fullmatch(path):
                    return group  # None for a route that is not limited
        return self._fallback.get(segment)


def build_rate_limiter(
    settings: Settings, *, redis: LazyRedis | None = None, tracing: Tracing | None = None
) -> RateLimiter:
    """The configured backend, with the local limiter behind any shared one. `redis` is the
    process's shared client, used by the Redis backend when given (and traced as it is);
    `tracing` traces the Upstash backend's commands."""
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
            settings.upstash_redis_rest_url, settings.upstash_redis_rest_token, tracing=tracing
        )
    from edgemart.ratelimit.fallback import FallbackRateLimiter

    return FallbackRateLimiter(shared, local, timeout_s=settings.rate_limit_timeout_ms / 1000)

"""Access logging: one JSON line per request, sampled (the request-context middleware
calls it once the response is sent).

A configurable share of 2xx/3xx lines is kept (default 1%); every 4xx/5xx and every request
slower than the slow threshold is always logged. Routes annotate the line through
`scope["state"]` (`cache`, `rate_limit`; "-" when a route sets none), so logging knows
nothing about them: `cache` is where a cached route's response came from (`hit`, `l2`,
`miss`, `stale`: `edgemart.cache.Source`), `rate_limit` the limiter's verdict. `tenant` is
the slug of the marketplace the request was for (`default` in a single-tenant deployment,
and for a request refused before its tenant was known): the per-tenant view of traffic, which
the metrics leave out (decision 0043).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import Match
from starlette.types import Scope

from edgemart.clientip import client_ip
from edgemart.logging import logger
from edgemart.settings import IPNetwork
from edgemart.tenancy import tenant_of

UNMATCHED = "<unmatched>"
MAX_LOGGED_PATH = 200


def should_log(
    status: int, duration_ms: float, sample_rate: float, slow_ms: float, draw: float
) -> bool:
    """Pure sampling rule: errors and slow requests always, the rest with `sample_rate`."""
    return status >= 400 or duration_ms >= slow_ms or draw < sample_rate


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/products/{id}`), so lines group by route.

    A path that matched with the wrong method (405) is reported under its route too."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    partial: str | None = None
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", ""))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", ""))
    return partial or UNMATCHED


def log_access(
    scope: Scope, status: int, duration_ms: float, trusted_proxies: Sequence[IPNetwork]
) -> None:
    state = scope.get("state", {})
    route = route_template(scope)
    fields = {
        "method": scope.get("method"),
        "route": route,
        "status": status,
        "duration_ms": round(duration_ms, 3),
        "client_ip": client_ip(scope, trusted_proxies),
        "request_id": state.get("request_id"),
        "tenant": tenant_of(scope).slug,
        "cache": state.get("cache", "-"),
        "rate_limit": state.get("rate_limit", "-"),
    }
    if route == UNMATCHED:
        # No route to group it under: the path itself says what was asked for (cut short,
        # since a client chooses it).
        fields["path"] = str(scope.get("path", ""))[:MAX_LOGGED_PATH]
    logger.info("request", extra=fields)

"""What every HTTP request records: `requests` by route group and status class,
`request_latency` by route group, and `rate_limited_requests` for a 429.

A route's group is its rate-limit group (home, search, store, listings, purchases, admin),
or, for a route no limit applies to, the function serving it (health); a method its path does
not allow counts under the path's route. A path the route table does not have is `gateway`
when the app routed it anyway (the gateway's own routes: `/metrics`, `/docs` and its assets),
`unmatched` otherwise. The request-context middleware calls `observe_request` once per
request, when the response has been sent; the work is two dictionary lookups (the group of
this method and path, the series of this group and status) and the adds, with no allocation
once both are cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgemart import metrics
from edgemart.metrics import Registry, Series
from edgemart.routetable import RouteSpec
from edgemart.routing import matching, methods_of, table_index

if TYPE_CHECKING:
    from starlette.types import Scope

UNMATCHED = "unmatched"
GATEWAY = "gateway"
"""The group of every route an app serves outside the route table. The gateway declares its
own routes where it serves them (gateway.docs, gateway.metricsroute), so this module knows
them by that alone: the router matched the request (Starlette puts the route in
`scope["route"]`) but the table has no such path. No Lambda function has such a route."""
_CACHE_SIZE = 4096  # (method, path) pairs; paths with ids churn through it


def route_group(route: RouteSpec) -> str:
    return route.rate_limit or route.function


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class RequestMetrics:
    def __init__(self, registry: Registry = metrics.REGISTRY) -> None:
        self.registry = registry
        self._groups: dict[tuple[str, str], str] = {}
        self._series: dict[tuple[str, int], tuple[Series, Series, Series | None]] = {}

    def group_of(self, method: str, path: str) -> str:
        """The group of the table route this method and path fall under; UNMATCHED when the
        table has no route on the path."""
        key = (method, path)
        group = self._groups.get(key)
        if group is None:
            group = self._match(method, path)
            if len(self._groups) >= _CACHE_SIZE:
                self._groups.clear()
            self._groups[key] = group
        return group

    def _match(self, method: str, path: str) -> str:
        routes = list(matching(table_index(), path))
        for route in routes:
            if method in methods_of(route.method):
                return route_group(route)
        return route_group(routes[0]) if routes else UNMATCHED

    def observe(self, scope: Scope, status: int, duration_ms: float) -> None:
        """Count one answered request; `scope` once the app has handled it (routed or not)."""
        group = self.group_of(scope["method"], scope["path"])
        if group == UNMATCHED and scope.get("route") is not None:
            group = GATEWAY
        bound = self._series.get((group, status))
        if bound is None:
            bound = self._bind(group, status)
        requests, latency, limited = bound
        requests.add()
        latency.add(duration_ms)
        if limited is not None:
            limited.add()

    def _bind(self, group: str, status: int) -> tuple[Series, Series, Series | None]:
        series = self.registry.series
        bound = (
            series(metrics.REQUESTS, route_group=group, status_class=status_class(status)),
            series(metrics.REQUEST_LATENCY, route_group=group),
            series(metrics.RATE_LIMITED_REQUESTS, route_group=group) if status == 429 else None,
        )
        self._series[group, status] = bound
        return bound


observe_request = RequestMetrics().observe
"""Record one answered request in this process's metrics."""

"""Per-request metrics: route groups from the route table (and `gateway` for the gateway's own
routes), status classes and what one request records."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgemart import metrics
from edgemart.metrics import Registry
from edgemart.requestmetrics import GATEWAY, UNMATCHED, RequestMetrics, status_class


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/marketplace/home", "home"),
        ("GET", "/marketplace/search", "search"),
        ("HEAD", "/marketplace/search", "search"),
        ("GET", "/stores/acme", "store"),
        ("GET", "/products/8a1c", "store"),
        ("PATCH", "/products/8a1c", "listings"),
        ("POST", "/purchases", "purchases"),
        ("GET", "/admin/kill-switches", "admin"),
        ("GET", "/health", "health"),  # no limit: the function serving it
        ("GET", "/openapi.json", "health"),
        ("DELETE", "/marketplace/home", "home"),  # 405: its path's route
        ("GET", "/nowhere/at/all", "unmatched"),
        ("GET", "/products/8a1c/extra", "unmatched"),
        ("GET", "/metrics", "unmatched"),  # not in the table: the request's routing decides
    ],
)
def test_route_group_of_a_request(method: str, path: str, group: str) -> None:
    assert RequestMetrics(Registry()).group_of(method, path) == group


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (304, "3xx"), (429, "4xx"), (503, "5xx")]
)
def test_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


def scope(method: str, path: str, route: BaseRoute | None = None) -> dict[str, Any]:
    """A request's scope once the app has handled it: the router left the route it matched."""
    handled: dict[str, Any] = {"type": "http", "method": method, "path": path}
    if route is not None:
        handled["route"] = route
    return handled


def test_a_request_counts_by_group_and_status_class_and_observes_its_latency() -> None:
    registry = Registry()
    observe = RequestMetrics(registry).observe
    observe(scope("GET", "/marketplace/search"), 200, 4.0)
    observe(scope("GET", "/marketplace/search"), 201, 6.0)
    observe(scope("GET", "/marketplace/search"), 429, 0.5)
    observe(scope("GET", "/health"), 503, 30.0)
    requests = metrics.REQUESTS
    assert registry.count(requests, route_group="search", status_class="2xx") == 2
    assert registry.count(requests, route_group="search", status_class="4xx") == 1
    assert registry.count(requests, route_group="health", status_class="5xx") == 1
    assert registry.count(metrics.RATE_LIMITED_REQUESTS) == 1
    assert registry.count(metrics.RATE_LIMITED_REQUESTS, route_group="search") == 1
    latency = {
        p.dimensions["route_group"]: p.values
        for p in registry.drain_pending()
        if p.metric is metrics.REQUEST_LATENCY
    }
    assert latency == {"search": [4.0, 6.0, 0.5], "health": [30.0]}


async def endpoint(request: Request) -> Response:
    return Response(status_code=204)


def test_a_routed_path_the_table_does_not_have_counts_as_gateway() -> None:
    registry = Registry()
    observe = RequestMetrics(registry).observe
    observe(scope("GET", "/metrics", Route("/metrics", endpoint)), 200, 1.0)
    observe(scope("POST", "/metrics", Route("/metrics", endpoint)), 405, 1.0)
    observe(scope("GET", "/metrics"), 404, 1.0)  # an app that does not serve it
    # A table route stays in its group whatever routed it (the rate limiter answers a 429
    # before any routing).
    observe(scope("GET", "/health", Route("/health", endpoint)), 200, 1.0)
    requests = metrics.REQUESTS
    assert registry.count(requests, route_group=GATEWAY, status_class="2xx") == 1
    assert registry.count(requests, route_group=GATEWAY, status_class="4xx") == 1
    assert registry.count(requests, route_group=UNMATCHED) == 1
    assert registry.count(requests, route_group="health") == 1

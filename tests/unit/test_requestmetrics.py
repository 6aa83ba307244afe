"""Per-request metrics: route groups from the route table, status classes, and what one
request records."""

import pytest

from edgemart import metrics
from edgemart.metrics import Registry
from edgemart.requestmetrics import RequestMetrics, status_class


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
    ],
)
def test_route_group_of_a_request(method: str, path: str, group: str) -> None:
    assert RequestMetrics(Registry()).group_of(method, path) == group


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (304, "3xx"), (429, "4xx"), (503, "5xx")]
)
def test_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


def test_a_request_counts_by_group_and_status_class_and_observes_its_latency() -> None:
    registry = Registry()
    observe = RequestMetrics(registry).observe
    observe("GET", "/marketplace/search", 200, 4.0)
    observe("GET", "/marketplace/search", 201, 6.0)
    observe("GET", "/marketplace/search", 429, 0.5)
    observe("GET", "/health", 503, 30.0)
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

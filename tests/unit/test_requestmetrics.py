"""Per-request metrics: route groups from the route table (and `gateway` for the gateway's own
routes), status classes, what one request records, and that the latency histogram and the
access line put every request under the same route group."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgemart import metrics
from edgemart.accesslog import UNMATCHED as ACCESS_UNMATCHED
from edgemart.appfactory import build_app
from edgemart.metrics import DistributionSeries, Registry
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.requestmetrics import GATEWAY, UNMATCHED, RequestMetrics, route_group, status_class
from edgemart.routetable import ROUTES, RouteSpec, function_names
from edgemart.routing import methods_of, starlette_routes
from edgemart.services import Services
from gateway.docs import docs_routes
from gateway.metricsroute import metrics_routes
from tests.conftest import LogCapture, settings_for


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


# ---- The histogram and the access line agree ----

WRONG_METHODS = ("DELETE", "PATCH", "PUT", "POST", "GET")
GATEWAY_REQUESTS = (
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
    ("POST", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/swagger-ui.css"),
    ("GET", "/docs/assets/no-such-asset.js"),
)
_PARAMETER = re.compile(r"\{(\w+)\}")
SAMPLE_UUID = "8a1c4f6e-2b7d-4e0a-9c3f-5d6b7a8e9f01"


def example_path(route: RouteSpec) -> str:
    """A request path the route's template matches: each parameter a value of its kind."""
    uuids = {p.name for p in route.params if p.schema.get("format") == "uuid"}
    return _PARAMETER.sub(
        lambda m: SAMPLE_UUID if m.group(1) in uuids else f"sample-{m.group(1)}", route.path
    )


def table_requests() -> Iterator[tuple[str, str]]:
    """Every route of the table with its own method (and HEAD for a GET), and each path once
    with a method none of its routes allows (405)."""
    allowed: dict[str, set[str]] = {}
    for route in ROUTES:
        path = example_path(route)
        allowed.setdefault(path, set()).update(methods_of(route.method))
        yield route.method, path
        if route.method == "GET":
            yield "HEAD", path
    for path, methods in allowed.items():
        yield next(m for m in WRONG_METHODS if m not in methods), path


def group_of_access_line(method: str, route: str) -> str:
    """The route group an access line's `route` (a path template) names: its table route for
    the method, else its path's route; a template the table does not have is one of the
    gateway's own routes."""
    if route == ACCESS_UNMATCHED:
        return UNMATCHED
    on_path = [spec for spec in ROUTES if spec.path == route]
    exact = [spec for spec in on_path if method in methods_of(spec.method)]
    return route_group((exact or on_path)[0]) if on_path else GATEWAY


def gateway_like_routes() -> list[BaseRoute]:
    """The gateway's routes in its order (gateway.app.gateway_routes: each HTTP function's
    `routes`, built by `starlette_routes`, then the docs and the metrics), every function's
    handlers a stub."""
    routes: list[BaseRoute] = []
    for function in function_names():
        handlers = {spec.handler: endpoint for spec in ROUTES if spec.function == function}
        routes.extend(starlette_routes(function, handlers))
    return routes + docs_routes() + metrics_routes()


@pytest.fixture
async def gateway_like() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        None,
        jwt_secret="unit-secret-of-at-least-32-bytes-long",
        access_log_sample_rate=1.0,
        rate_limit_overrides=tuple((group, 0, 60) for group in DEFAULT_POLICIES),
    )
    services = Services.from_settings(settings)
    app = build_app(gateway_like_routes(), services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.20", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client
    await services.aclose()


def latency_counts() -> dict[str, int]:
    return {
        found.dimensions["route_group"]: found.count
        for found in metrics.all_series()
        if found.metric is metrics.REQUEST_LATENCY and isinstance(found, DistributionSeries)
    }


@pytest.mark.anyio
async def test_the_histogram_and_the_access_line_agree_on_every_routes_group(
    gateway_like: httpx.AsyncClient, captured_logs: LogCapture
) -> None:
    requests = [
        *table_requests(),
        *GATEWAY_REQUESTS,
        ("GET", "/no/such/path"),
        ("GET", "/marketplace/home/extra"),
    ]
    observed = []
    for method, path in requests:
        before, lines_before = latency_counts(), len(captured_logs.formatted)
        response = await gateway_like.request(method, path)
        after = latency_counts()
        [grown] = [g for g, n in after.items() if n != before.get(g, 0)]
        assert after[grown] == before.get(grown, 0) + 1
        [line] = [
            line for line in captured_logs.lines()[lines_before:] if line["message"] == "request"
        ]
        assert (line["method"], line["status"]) == (method, response.status_code)
        observed.append((method, path, grown, group_of_access_line(method, str(line["route"]))))
    disagreeing = [request for request in observed if request[2] != request[3]]
    assert disagreeing == []
    groups = {(method, path): group for method, path, group, _ in observed}
    for route in ROUTES:  # each route under its own group, not merely the same wrong one
        assert groups[route.method, example_path(route)] == route_group(route)
    assert {groups[request] for request in GATEWAY_REQUESTS} == {GATEWAY}
    assert groups["GET", "/no/such/path"] == groups["GET", "/marketplace/home/extra"] == UNMATCHED

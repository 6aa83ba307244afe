"""The route table and what is derived from it: Starlette routes, Allow, rate-limit groups and
cache rules."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from starlette.requests import Request
from starlette.responses import Response

from edgemart.cache import CACHE_RULES
from edgemart.counters import MAX_QUERY_LENGTH
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.ratelimit.policies import RateLimitTable
from edgemart.routetable import ROUTES, RouteSpec, function_names
from edgemart.routing import RouteTableError, allowed_methods, by_name, starlette_routes
from edgemart.settings import RATE_LIMIT_GROUPS, Settings


async def endpoint(request: Request) -> Response:
    return Response()


def sample_path(route: RouteSpec) -> str:
    return re.sub(r"\{\w+\}", "sample", route.path)


def test_one_declaration_per_method_and_path_and_per_handler() -> None:
    assert not [k for k, n in Counter((r.method, r.path) for r in ROUTES).items() if n > 1]
    assert not [k for k, n in Counter((r.function, r.handler) for r in ROUTES).items() if n > 1]
    assert not [k for k, n in Counter(r.handler for r in ROUTES).items() if n > 1]  # operationId


def test_routes_are_built_in_table_order_with_the_named_handlers() -> None:
    handlers = {route.handler: endpoint for route in ROUTES if route.function == "store"}
    built = starlette_routes("store", handlers)
    expected = [(r.path, {r.method}) for r in ROUTES if r.function == "store"]
    assert [(route.path, route.methods - {"HEAD"}) for route in built] == expected  # type: ignore[attr-defined]


def test_by_name_keys_handlers_by_their_python_name() -> None:
    async def home(request: Request) -> Response:
        return Response()

    assert by_name(home, endpoint) == {"home": home, "endpoint": endpoint}


def test_a_missing_handler_is_refused_at_import() -> None:
    handlers = {route.handler: endpoint for route in ROUTES if route.function == "store"}
    del handlers["update_product"]
    with pytest.raises(RouteTableError, match="update_product"):
        starlette_routes("store", handlers)


def test_a_handler_the_table_does_not_list_is_refused() -> None:
    handlers = {route.handler: endpoint for route in ROUTES if route.function == "home"}
    with pytest.raises(RouteTableError, match="delete_home"):
        starlette_routes("home", {**handlers, "delete_home": endpoint})
    with pytest.raises(RouteTableError):
        starlette_routes("nowhere", {})


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/products/0b6a4c9e-7f3c-4e0e-9d51-3c1e3f3e2a10", ["GET", "HEAD", "PATCH"]),
        ("/admin/kill-switches/purchases", ["GET", "HEAD", "PUT"]),
        ("/purchases", ["GET", "HEAD", "POST"]),
        ("/stores/acme/payouts", ["GET", "HEAD"]),
        ("/health", ["GET", "HEAD"]),
        ("/products/a/b", []),
        ("/nowhere", []),
    ],
)
def test_allowed_methods_span_every_function(path: str, allowed: list[str]) -> None:
    assert allowed_methods(path) == allowed


def test_the_override_list_is_the_policies_groups_and_every_route_group_has_a_policy() -> None:
    assert RATE_LIMIT_GROUPS == tuple(DEFAULT_POLICIES)
    used = {route.rate_limit for route in ROUTES} - {None}
    assert used == set(DEFAULT_POLICIES)
    for group in DEFAULT_POLICIES:
        settings = Settings.from_env({f"RATE_LIMIT_{group.upper()}": "7/60"})
        assert settings.rate_limit_overrides == ((group, 7, 60),)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.label)
def test_each_route_is_limited_by_its_own_group(route: RouteSpec) -> None:
    table = RateLimitTable.from_settings(Settings())
    assert table.group_for(route.method, sample_path(route)) == route.rate_limit
    if route.method == "GET":
        assert table.group_for("HEAD", sample_path(route)) == route.rate_limit
    policy = table.policy_for(route.method, sample_path(route))
    assert (policy.name if policy else None) == route.rate_limit


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/stores/acme/unknown", "store"),  # a 404 under a limited prefix
        ("DELETE", "/products/x", "store"),  # a 405
        ("GET", "/purchases/a/b", "purchases"),
        ("POST", "/admin/anything", "admin"),
        ("GET", "/marketplace/unknown", None),  # home and search: no one group to charge
        ("POST", "/health", None),
        ("GET", "/unknown", None),
    ],
)
def test_unrouted_requests_count_against_their_prefixs_group(
    method: str, path: str, group: str | None
) -> None:
    assert RateLimitTable.from_settings(Settings()).group_for(method, path) == group


def test_an_overridden_off_group_is_unlimited() -> None:
    table = RateLimitTable.from_settings(Settings.from_env({"RATE_LIMIT_STORE": "off"}))
    assert table.policy_for("GET", "/stores/acme") is None
    assert table.policy_for("POST", "/stores") is not None  # listings


def test_cache_rules_routes_are_the_tables() -> None:
    named = {route.cache_rule for route in ROUTES} - {None}
    assert named == set(CACHE_RULES)
    for rule in CACHE_RULES.values():
        labels = [r.label for r in ROUTES if r.cache_rule == rule.name]
        assert rule.routes == tuple(labels)
        assert all(label.startswith("GET ") for label in labels)


def test_functions_are_named_once_in_table_order() -> None:
    assert function_names() == (
        "admin",
        "health",
        "home",
        "platform",
        "purchase",
        "realtime",
        "search",
        "store",
    )


def test_path_parameters_bring_their_404s() -> None:
    routes = {route.label: route for route in ROUTES}

    def not_found(label: str) -> tuple[str, ...]:
        codes = routes[label].problems[404]
        assert codes[-1] == "tenant_not_found"  # every tenant's route (multi mode)
        return codes[:-1]

    assert not_found("GET /stores/{slug}") == ("store_not_found",)
    assert not_found("GET /admin/kill-switches/{name}") == ("kill_switch_not_found",)
    # A UUID in another spelling is 404 `not_found`, an unknown one the route's own code.
    assert not_found("GET /products/{product_id}") == ("not_found", "product_not_found")
    assert not_found("GET /purchases/{order_id}") == ("not_found", "order_not_found")


def test_a_hidden_search_term_is_as_long_as_a_counted_one() -> None:
    (route,) = [route for route in ROUTES if route.handler == "set_popular_search_hidden"]
    assert route.body is not None
    assert route.body["properties"]["query"]["maxLength"] == MAX_QUERY_LENGTH

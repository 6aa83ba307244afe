"""The OpenAPI document: valid 3.1, and the route table and the document agree route by route,
parameter by parameter, body field by body field, problem code by problem code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from edgemart.openapi import PROBLEM_REF, document
from edgemart.routetable import ROUTES, RouteSpec
from edgemart.tenancy import is_tenant_scoped

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return document()


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_the_validator_refuses_a_broken_document(spec: dict[str, Any]) -> None:
    broken = {**spec, "paths": {"/x": {"get": {"responses": {"200": {}}}}}}  # no description
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_and_method_and_nothing_else(spec: dict[str, Any]) -> None:
    in_document = {
        (method.upper(), path) for path, item in spec["paths"].items() for method in item
    }
    assert in_document == {(route.method, route.path) for route in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.label)
def test_each_operation_carries_its_route(spec: dict[str, Any], route: RouteSpec) -> None:
    operation = spec["paths"][route.path][route.method.lower()]
    assert operation["summary"] == route.summary
    assert operation["x-rate-limit-group"] == route.rate_limit
    assert operation["x-cache-rule"] == route.cache_rule
    assert operation["x-unknown-query-parameters"] == route.unknown_query
    assert ("security" in operation) == (route.auth != "none")
    parameters = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
    assert set(parameters) == {(param.name, param.location) for param in route.params}
    for param in route.params:
        described = parameters[(param.name, param.location)]
        assert described["required"] == param.required
        assert described["schema"] == param.schema
    if route.body is None:
        assert "requestBody" not in operation
    else:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == set(route.body["properties"])
        assert schema["required"] == route.body["required"]
    responses = operation["responses"]
    assert set(responses) == {str(s) for s in (*route.success, *route.problems)}
    for status, codes in route.problems.items():
        schema = responses[str(status)]["content"]["application/problem+json"]["schema"]
        assert schema["allOf"][0] == {"$ref": PROBLEM_REF}
        assert schema["allOf"][1]["properties"]["code"]["enum"] == list(codes)
        assert responses[str(status)]["x-problem-codes"] == list(codes)


def test_problem_codes_follow_from_the_routes_traits() -> None:
    routes = {route.label: route for route in ROUTES}
    purchase = routes["POST /purchases"].problems
    assert purchase[400] == ("idempotency_key_required", "invalid_idempotency_key", "invalid_json")
    assert purchase[401] == ("unauthorized",)
    assert set(purchase[422]) == {"idempotency_key_reused", "validation_error"}
    assert purchase[429] == ("rate_limited",)
    assert purchase[503] == ("purchases_disabled", "service_unavailable", "read_only_mode")
    assert routes["PUT /admin/kill-switches/{name}"].problems[403] == (
        "forbidden",
        "tenant_mismatch",
    )
    assert 429 not in routes["GET /health/live"].problems
    assert 503 not in routes["GET /health/live"].problems
    assert routes["GET /marketplace/home"].problems[503] == ("service_unavailable",)


def test_every_route_of_a_tenant_lists_the_tenancy_problems() -> None:
    """Multi mode's (decision 0041): an unknown host on any route of a marketplace (not the
    health checks, not platform administration), and a token of another tenant on any such
    route that takes one."""
    for route in ROUTES:
        problems = route.problems
        if not is_tenant_scoped(route.path):  # (a platform route's 404 is an unknown slug's)
            assert "tenant_not_found" not in problems.get(404, ()) or route.errors.get(404)
            assert "tenant_mismatch" not in problems.get(403, ()), route.label
            continue
        assert "tenant_not_found" in problems[404], route.label
        takes_a_token = route.auth != "none" or 401 in problems
        assert ("tenant_mismatch" in problems.get(403, ())) == takes_a_token, route.label


def test_the_problem_schema_names_every_problem_member(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
        "errors",
    }


def test_importing_the_health_function_does_not_build_the_document() -> None:
    code = "import sys, functions.health.app; print('edgemart.openapi' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"

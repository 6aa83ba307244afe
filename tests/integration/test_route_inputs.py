"""Every route takes exactly the inputs its route-table entry declares.

From the table alone, each route gets requests with every declared input valid (all of them,
and the required ones only) and, for each input, requests that get it wrong in each way its
schema rules out: wrong type, out of bounds, too long or short, off pattern or enum, text no
one can store, missing, repeated, unknown. They go through two apps built by the same factory:
the gateway, whose handlers must never see a refused request, and one whose handlers echo the
inputs they were handed, which shows what was accepted and how it was typed (defaults filled
in, integers parsed, UUIDs canonical). Every refusal is the problem the table implies for that
input, and one `/openapi.json` lists for the route.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart.appfactory import build_app
from edgemart.openapi import document
from edgemart.requestinputs import inputs_of
from edgemart.routetable import ROUTES, Param, RouteSpec, Schema, function_names
from edgemart.routetable import header_problem_codes as header_codes
from edgemart.routing import starlette_routes
from edgemart.services import Services
from edgemart.validation import text_problem
from gateway.app import create_gateway
from tests.conftest import settings_for
from tests.support.tokens import TOKEN_LIFETIME_S

pytestmark = pytest.mark.anyio

SECRET = "route-inputs-secret-of-at-least-32-bytes"
TOKEN = jwt.encode(
    {
        "sub": "root",
        "roles": ["admin", "platform_admin"],
        "exp": int(time.time()) + TOKEN_LIFETIME_S,
    },
    SECRET,
    algorithm="HS256",
)
SAMPLE_UUID = "3f2b8c1d-4e5a-4b6c-8d7e-9f0a1b2c3d4e"
DOCUMENT = document()
Refusal = tuple[int, str, str | None]  # status, code, the field `errors` names (422 only)


def sample(schema: Schema) -> Any:
    """A value the schema admits, from the schema alone."""
    if "examples" in schema:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    if schema["type"] == "array":
        return [sample(schema["items"])] * max(schema.get("minItems", 0), 1)
    if schema["type"] == "integer":
        return schema.get("minimum", 0)
    if schema["type"] == "boolean":
        return False
    if schema.get("format") == "uuid":
        return SAMPLE_UUID
    return "a" * max(schema.get("minLength", 0), 1)


def as_text(value: Any) -> str:
    """How a query, path or header value travels."""
    return str(value)


@dataclass
class Wrong:
    """One way to get a value wrong: what to send, and whether the text rule is the reason
    (a path parameter's text is 422 even where a value no resource can have is 404)."""

    value: Any
    unstorable: bool = False
    other_spelling: bool = False


def wrong_values(schema: Schema, location: str) -> Iterator[Wrong]:
    """Values the schema rules out, each for one reason."""
    valid = sample(schema)
    in_body = location == "body"
    if schema["type"] == "integer":
        if "minimum" in schema:
            yield Wrong(schema["minimum"] - 1)
        if "maximum" in schema:
            yield Wrong(schema["maximum"] + 1)
        yield from (
            (Wrong(str(valid)), Wrong(True), Wrong(valid + 0.5))
            if in_body
            else (Wrong(f"{valid}.5"), Wrong("ten"), Wrong(f"+{valid}"))
        )
        return
    if schema["type"] == "boolean":
        yield from (Wrong("true"), Wrong(0), Wrong(None))
        return
    if schema["type"] == "array":
        yield Wrong(valid[0])
        if schema.get("minItems", 0) > 0:
            yield Wrong([])
        if "maxItems" in schema:
            yield Wrong(valid[:1] * (schema["maxItems"] + 1))
        for item in wrong_values(schema["items"], location):
            yield Wrong([item.value], unstorable=item.unstorable)
        return
    if in_body:
        yield Wrong(12345)
    yield Wrong("\x00" + valid[1:], unstorable=True)
    if in_body:  # elsewhere text arrives percent-encoded UTF-8: no lone surrogate survives it
        yield Wrong("\ud800", unstorable=True)
    if "maxLength" in schema:
        yield Wrong("a" * (schema["maxLength"] + 1))
    # An empty path segment matches no route, and an empty header is a missing one.
    if schema.get("minLength", 0) > (1 if location in ("path", "header") else 0):
        yield Wrong("a" * (schema["minLength"] - 1))
    if "enum" in schema:
        yield Wrong("x" + schema["enum"][0])
    if "pattern" in schema:
        yield Wrong(off_pattern(schema, valid))
    if schema.get("format") == "uuid":
        yield Wrong("urn:uuid:" + valid if in_body else "not-a-uuid")
        if location == "path":
            yield Wrong(valid.upper(), other_spelling=True)
            yield Wrong(valid.replace("-", ""), other_spelling=True)


def off_pattern(schema: Schema, valid: str) -> str:
    """Text of an allowed length, clean for the text rule, that the pattern refuses."""
    for candidate in (valid.upper(), " " * len(valid), "\xe9" * len(valid), "-" * len(valid)):
        if text_problem(candidate) is None and re.search(schema["pattern"], candidate) is None:
            return candidate
    raise AssertionError(f"no text off {schema['pattern']} to try")


@dataclass
class Case:
    """A request built from the table, and what must come of it: None (accepted) or a
    refusal."""

    label: str
    path: dict[str, Any]
    query: list[tuple[str, Any]]
    headers: dict[str, Any]
    body: Any
    expected: Refusal | None
    echoed: dict[str, Any] = field(default_factory=dict)


def parts(route: RouteSpec, *, optional: bool) -> tuple[dict[str, Any], ...]:
    """Valid values of every declared input (or of the required ones only), by location."""
    values: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "header": {}}
    for param in route.params:
        if param.required or optional:
            values[param.location][param.name] = sample(param.schema)
    body: dict[str, Any] = {}
    if route.body is not None:
        required = set(route.body["required"])
        for name, schema in route.body["properties"].items():
            if name in required or optional or (not required and not body):
                body[name] = sample(schema)  # minProperties: at least one field
    return values["path"], values["query"], values["header"], body


def echoed(route: RouteSpec, path: dict[str, Any], query: dict[str, Any], body: Any) -> Any:
    """What the echoing handler must be handed: the values typed, defaults filled in."""

    def typed(schema: Schema, value: Any) -> Any:
        if schema.get("format") == "uuid":
            return str(uuid.UUID(value))
        return int(value) if schema["type"] == "integer" else value

    by_name = {(p.location, p.name): p for p in route.params}
    query_values = {
        p.name: p.schema["default"]
        for p in route.params
        if p.location == "query" and "default" in p.schema
    }
    query_values.update(
        {name: typed(by_name["query", name].schema, value) for name, value in query.items()}
    )
    body_values = (
        {name: typed(route.body["properties"][name], value) for name, value in body.items()}
        if route.body is not None
        else {}
    )
    return {
        "path": {name: typed(by_name["path", name].schema, v) for name, v in path.items()},
        "query": query_values,
        "body": body_values,
    }


def cases(route: RouteSpec) -> list[Case]:
    found: list[Case] = []
    for optional in (True, False):
        path, query, headers, body = parts(route, optional=optional)
        found.append(
            Case(
                "valid, with optional inputs" if optional else "valid, required inputs only",
                path,
                list(query.items()),
                headers,
                body,
                None,
                echoed(route, path, query, body),
            )
        )
    path, query, headers, body = parts(route, optional=True)

    def case(label: str, expected: Refusal | None, **changes: Any) -> None:
        request = {"path": path, "query": list(query.items()), "headers": headers, "body": body}
        request.update(changes)
        accepted = echoed(route, path, query, body) if expected is None else {}
        found.append(Case(label, expected=expected, echoed=accepted, **request))

    for param in route.params:
        found.extend(param_cases(route, param, path, query, headers, body))
    if route.body is not None:
        for name, schema in route.body["properties"].items():
            for wrong in wrong_values(schema, "body"):
                case(
                    f"body {name}={wrong.value!r}", invalid(name), body={**body, name: wrong.value}
                )
            if name in route.body["required"]:
                rest = {k: v for k, v in body.items() if k != name}
                case(f"body without {name}", invalid(name), body=rest)
        case("an unknown body field", invalid("unexpected"), body={**body, "unexpected": 1})
        case("a body that is no object", invalid("body"), body=[body])
        if route.body.get("minProperties"):
            case("an empty body", invalid("body"), body={})
    unknown = invalid("unexpected") if route.unknown_query == "refused" else None
    case("an unknown query parameter", unknown, query=[*query.items(), ("unexpected", "1")])
    return found


def invalid(field_name: str) -> Refusal:
    return (422, "validation_error", field_name)


def param_cases(
    route: RouteSpec,
    param: Param,
    path: dict[str, Any],
    query: dict[str, Any],
    headers: dict[str, Any],
    body: Any,
) -> Iterator[Case]:
    def with_value(value: Any) -> dict[str, Any]:
        if param.location == "path":
            return {"path": {**path, param.name: value}}
        if param.location == "query":
            return {
                "query": [
                    *((k, v) for k, v in query.items() if k != param.name),
                    (param.name, value),
                ]
            }
        return {"headers": {**headers, param.name: value}}

    base = {"path": path, "query": list(query.items()), "headers": headers, "body": body}
    label = f"{param.location} {param.name}"
    for wrong in wrong_values(param.schema, param.location):
        if param.location == "header":
            expected: Refusal = (400, header_codes(param.name)[1], None)
        elif wrong.other_spelling:
            expected = (404, "not_found", None)
        elif param.location == "path" and param.not_found and not wrong.unstorable:
            expected = (404, param.not_found, None)
        else:
            expected = invalid(param.name)
        yield Case(
            f"{label}={wrong.value!r}", expected=expected, **{**base, **with_value(wrong.value)}
        )
    if param.location == "query":
        twice = [*query.items(), (param.name, sample(param.schema))]
        if param.name not in query:
            twice.append((param.name, sample(param.schema)))
        yield Case(f"{label} twice", expected=invalid(param.name), **{**base, "query": twice})
        if param.required:
            rest = [(k, v) for k, v in query.items() if k != param.name]
            yield Case(f"{label} missing", expected=invalid(param.name), **{**base, "query": rest})
    if param.location == "header" and param.required:
        for missing in ({}, {param.name: ""}):
            rest = {**{k: v for k, v in headers.items() if k != param.name}, **missing}
            expected = (400, header_codes(param.name)[0], None)
            yield Case(f"{label} missing", expected=expected, **{**base, "headers": rest})


def request_of(route: RouteSpec, case: Case) -> dict[str, Any]:
    url = route.path
    for name, value in case.path.items():
        url = url.replace("{" + name + "}", piece(as_text(value)))
    query = "&".join(f"{piece(name)}={piece(as_text(value))}" for name, value in case.query)
    headers: dict[str, Any] = {"Authorization": f"Bearer {TOKEN}"}
    for name, value in case.headers.items():
        headers[name] = as_text(value).encode("latin-1")
    content = None
    if route.body is not None:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    return {
        "method": route.method,
        "url": url + (f"?{query}" if query else ""),
        "headers": headers,
        "content": content,
    }


def piece(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


async def echo(request: Request) -> Response:
    inputs = inputs_of(request)

    def plain(values: Any) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in values.items()}

    return JSONResponse(
        {"path": plain(inputs.path), "query": plain(inputs.query), "body": plain(inputs.body)}
    )


@pytest.fixture(scope="module")
async def apps(module_database_url: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    settings = settings_for(
        module_database_url,
        jwt_secret=SECRET,
        rate_limit_overrides=tuple(
            (group, 0, 60)
            for group in ("home", "search", "store", "listings", "purchases", "admin")
        ),
    )
    services = Services.from_settings(settings)
    echoing = build_app(
        [
            route
            for function in function_names()
            for route in starlette_routes(
                function, {s.handler: echo for s in ROUTES if s.function == function}
            )
        ],
        services=services,
    )
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.50", 1)),
            base_url="http://t",
        )
        for name, app in (("echo", echoing), ("gateway", create_gateway(services)))
    }
    yield clients
    for client in clients.values():
        await client.aclose()
    await services.aclose()


def assert_refused(route: RouteSpec, case: Case, response: httpx.Response) -> None:
    assert case.expected is not None
    status, code, field_name = case.expected
    assert response.status_code == status, (case.label, response.text)
    problem = response.json()
    assert problem["code"] == code, (case.label, problem)
    if field_name is not None:
        assert field_name in {error["field"] for error in problem["errors"]}, (case.label, problem)
    described = DOCUMENT["paths"][route.path][route.method.lower()]["responses"][str(status)]
    assert code in described["x-problem-codes"], (case.label, code)


HTTP_ROUTES = [route for route in ROUTES if not route.websocket]
"""A WebSocket route answers a plain request 426 whatever it sends (tests/live)."""


@pytest.mark.parametrize("route", HTTP_ROUTES, ids=lambda route: route.label)
async def test_a_route_takes_what_its_table_entry_declares(
    apps: dict[str, httpx.AsyncClient], route: RouteSpec
) -> None:
    for case in cases(route):
        request = request_of(route, case)
        handed = await apps["echo"].request(**request)
        if case.expected is None:
            assert handed.status_code == 200, (case.label, handed.text)
            assert handed.json() == case.echoed, case.label
            continue
        assert_refused(route, case, handed)
        assert_refused(route, case, await apps["gateway"].request(**request))


def test_every_route_gets_refused_cases() -> None:
    for route in ROUTES:
        refused = [case for case in cases(route) if case.expected is not None]
        inputs = len(route.params) + len((route.body or {}).get("properties", {}))
        assert len(refused) >= inputs, route.label

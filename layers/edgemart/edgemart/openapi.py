"""The OpenAPI 3.1 document of the HTTP API, built from the route table.

Built on the first request for it (`rendered`), never at import: the health function serves
it and its cold start should not pay for it. Every problem response refers to one `Problem`
schema, narrowed per response to the `code`s that route and status can carry (also listed as
`x-problem-codes`). Parameters and bodies are the table's schemas as they are, the very ones
requests are validated against (edgemart.requestinputs).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from edgemart import __version__
from edgemart.errors import PROBLEM_CONTENT_TYPE
from edgemart.routetable import ROUTES, Param, RouteSpec

PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with edgemart's stable `code` and request id",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_error only: one entry per refused field",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "string", "enum": ["body", "query", "path"]},
                    "message": {"type": "string"},
                },
                "required": ["field", "location", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "code", "request_id"],
}


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase


def _parameter(param: Param) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.required,
        "schema": dict(param.schema),
    }
    if param.description:
        described["description"] = param.description
    return described


WEBSOCKET_DESCRIPTION = (
    "A WebSocket upgrade (send `Connection: Upgrade`, `Upgrade: websocket`): OpenAPI cannot "
    "describe what follows. Text frames of JSON: the client sends `auth`, `subscribe`, "
    "`unsubscribe` and `ping` actions; the server answers with each subscribed channel's "
    "current state, then one message per committed change (`order`, `stock`), `pong` and "
    "`error`. The whole protocol, its limits and errors: docs/live-updates.md."
)


def _success(route: RouteSpec, status: int) -> dict[str, Any]:
    if status == 101:
        return {"description": "Switching Protocols: the live-update WebSocket"}
    if status == 304:
        return {"description": "Not modified (If-None-Match matched the ETag)"}
    return {"description": _phrase(status), "content": {"application/json": {"schema": {}}}}


def _problem(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    schema = {"allOf": [{"$ref": PROBLEM_REF}, {"properties": {"code": {"enum": list(codes)}}}]}
    return {
        "description": _phrase(status),
        "x-problem-codes": list(codes),
        "content": {PROBLEM_CONTENT_TYPE: {"schema": schema}},
    }


def operation(route: RouteSpec) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": route.handler,
        "summary": route.summary,
        "tags": [route.function],
        "x-rate-limit-group": route.rate_limit,
        "x-cache-rule": route.cache_rule,
        # A query parameter the operation does not list: 422, or ignored.
        "x-unknown-query-parameters": route.unknown_query,
    }
    if route.params:
        described["parameters"] = [_parameter(param) for param in route.params]
    if route.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": dict(route.body)}},
        }
    if route.auth != "none":
        described["security"] = [{"bearer": []}]
    if route.auth == "admin":
        described["description"] = "Needs a token with the admin role."
    elif route.auth == "platform":
        described["description"] = (
            "Needs a token with the platform_admin role that names no tenant (no org_id)."
        )
    if route.websocket:
        described["description"] = WEBSOCKET_DESCRIPTION
        described["x-websocket"] = True
    responses = {str(status): _success(route, status) for status in route.success}
    responses.update(
        {str(status): _problem(status, codes) for status, codes in route.problems.items()}
    )
    described["responses"] = responses
    return described


def document(routes: Iterable[RouteSpec] = ROUTES) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgemart", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


@functools.cache
def rendered() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()

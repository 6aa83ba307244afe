"""edgemart.requestcontext: the outermost middleware, driven directly with ASGI messages
around small apps (request ids, response headers, the gate, the body limit, errors, the
access line)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgemart.cors import CorsPolicy
from edgemart.errors import ProblemError, problem_error_handler
from edgemart.logging import current_log_keys
from edgemart.requestcontext import (
    RESPONSE_HEADERS_KEY,
    ExceptionHandler,
    RequestContextMiddleware,
    RequestGate,
    handler_for,
)
from edgemart.requestid import current_request_id
from tests.conftest import LogCapture

pytestmark = pytest.mark.anyio

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = [v.decode() for n, v in self.headers if n.decode().lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def middleware(
    app: ASGIApp,
    *,
    sample_rate: float = 0.0,
    max_body_bytes: int = 10,
    gate: RequestGate | None = None,
    cors: CorsPolicy | None = None,
) -> RequestContextMiddleware:
    return RequestContextMiddleware(
        app,
        sample_rate=sample_rate,
        slow_ms=1000.0,
        max_body_bytes=max_body_bytes,
        gate=gate,
        exception_handlers={ProblemError: problem_error_handler},
        cors=cors,
        rng=random.Random(7),
    )


def http_scope(
    method: str = "GET",
    path: str = "/things",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    peer: str = "203.0.113.9",
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers or [],
        "client": (peer, 40000),
    }


async def call(
    app: ASGIApp, scope: dict[str, Any] | None = None, chunks: tuple[bytes, ...] = ()
) -> Answer:
    answer = Answer()
    pending = list(chunks) or [b""]

    async def receive() -> Message:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = list(message.get("headers", []))
        else:
            answer.body += message.get("body", b"")

    await app(scope if scope is not None else http_scope(), receive, send)
    return answer


def answering(
    status: int = 200, headers: dict[str, str] | None = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(b"{}", status_code=status, headers=headers)(scope, receive, send)

    return app


def test_the_handler_of_the_nearest_class_wins() -> None:
    def named(name: str) -> ExceptionHandler:
        async def handler(request: Request, exc: Exception) -> Response:
            return Response(name)

        return handler

    general, lookups = named("general"), named("lookups")
    handlers = {Exception: general, LookupError: lookups}
    assert handler_for(handlers, KeyError("k")) is lookups
    assert handler_for(handlers, ValueError("v")) is general
    assert handler_for({LookupError: lookups}, ValueError("v")) is None


async def test_every_response_carries_a_fresh_request_id_and_nosniff() -> None:
    scope = http_scope()
    answer = await call(middleware(answering()), scope)
    request_id = answer.header("x-request-id")
    assert request_id is not None and GENERATED_ID.fullmatch(request_id)
    assert answer.header("x-content-type-options") == "nosniff"
    assert scope["state"]["request_id"] == request_id
    second = await call(middleware(answering()))
    assert second.header("x-request-id") != request_id


async def test_a_well_formed_incoming_id_is_kept_and_bound_to_the_logs_meanwhile() -> None:
    seen: dict[str, object] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["request_id"] = current_request_id()
        seen["log_keys"] = dict(current_log_keys())
        await answering()(scope, receive, send)

    answer = await call(middleware(app), http_scope(headers=[(b"x-request-id", b"abc-1.2_3")]))
    assert answer.header("x-request-id") == "abc-1.2_3"
    assert seen["request_id"] == "abc-1.2_3"
    assert seen["log_keys"] == {"correlation_id": "abc-1.2_3", "request_id": "abc-1.2_3"}
    assert dict(current_log_keys()) == {}  # unbound once the request is over


@pytest.mark.parametrize("incoming", [b"has space", b"x" * 129, b"caf\xc3\xa9", b""])
async def test_a_malformed_incoming_id_is_replaced(incoming: bytes) -> None:
    answer = await call(middleware(answering()), http_scope(headers=[(b"x-request-id", incoming)]))
    request_id = answer.header("x-request-id")
    assert request_id is not None and GENERATED_ID.fullmatch(request_id)


@pytest.mark.parametrize(
    ("method", "status", "cache_control"),
    [
        ("GET", 200, "public, max-age=60"),
        ("HEAD", 304, "public, max-age=60"),
        ("GET", 404, "no-store"),
        ("GET", 503, "no-store"),
        ("POST", 201, "no-store"),
        ("DELETE", 200, "no-store"),
    ],
)
async def test_errors_and_unsafe_methods_are_never_stored_whatever_the_app_said(
    method: str, status: int, cache_control: str
) -> None:
    app = answering(status, {"Cache-Control": "public, max-age=60"})
    answer = await call(middleware(app), http_scope(method))
    assert answer.status == status
    assert answer.header("cache-control") == cache_control


async def test_headers_the_gate_queues_are_appended_to_the_apps_response() -> None:
    def gate(scope: Scope) -> Response | None:
        scope["state"][RESPONSE_HEADERS_KEY].append((b"ratelimit", b'"g";r=1;t=5'))
        return None

    answer = await call(middleware(answering(), gate=gate))
    assert answer.status == 200
    assert answer.header("ratelimit") == '"g";r=1;t=5'


async def test_a_gates_refusal_is_sent_instead_of_the_app() -> None:
    called = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(True)
        await answering()(scope, receive, send)

    def refuse(scope: Scope) -> Response | None:
        return JSONResponse({"refused": True}, status_code=429)

    answer = await call(middleware(app, gate=refuse))
    assert (answer.status, answer.json(), called) == (429, {"refused": True}, [])
    assert answer.header("cache-control") == "no-store"
    assert answer.header("x-request-id") is not None


async def test_a_gate_that_has_to_wait_is_awaited() -> None:
    async def decide(scope: Scope) -> Response | None:
        return Response(status_code=503) if scope["path"] == "/busy" else None

    gate: RequestGate = decide
    assert (await call(middleware(answering(), gate=gate))).status == 200
    assert (await call(middleware(answering(), gate=gate), http_scope(path="/busy"))).status == 503


async def test_a_declared_body_over_the_limit_is_refused_before_the_app() -> None:
    called = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(True)

    scope = http_scope("POST", headers=[(b"content-length", b"11")])
    answer = await call(middleware(app, max_body_bytes=10), scope)
    assert (answer.status, answer.json()["code"], called) == (413, "payload_too_large", [])
    assert answer.header("cache-control") == "no-store"


async def body_length(scope: Scope, receive: Receive, send: Send) -> None:
    received = b""
    while True:
        message = await receive()
        received += message.get("body", b"")
        if not message.get("more_body"):
            break
    await JSONResponse({"length": len(received)})(scope, receive, send)


async def test_a_streamed_body_is_counted_and_refused_once_over_the_limit() -> None:
    within = await call(middleware(body_length), http_scope("POST"), (b"12345", b"12345"))
    assert (within.status, within.json()) == (200, {"length": 10})
    over = await call(middleware(body_length), http_scope("POST"), (b"123456", b"123456"))
    assert (over.status, over.json()["code"]) == (413, "payload_too_large")


async def test_a_bodiless_get_is_not_wrapped() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert receive is outer_receive
        await answering()(scope, receive, send)

    async def outer_receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    await middleware(app)(http_scope(), outer_receive, send)


async def test_a_registered_handler_renders_its_errors_with_the_request_id() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ProblemError(409, "conflict", "Conflict", "already there")

    answer = await call(middleware(app), http_scope(headers=[(b"x-request-id", b"rid-409")]))
    assert answer.status == 409
    assert (answer.json()["code"], answer.json()["request_id"]) == ("conflict", "rid-409")


async def test_an_unhandled_error_is_a_logged_500_problem(captured_logs: LogCapture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret internals")

    answer = await call(middleware(app))
    assert answer.status == 500
    body = answer.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == answer.header("x-request-id")
    assert "secret internals" not in answer.body.decode()
    (line,) = [line for line in captured_logs.lines() if line["level"] == "ERROR"]
    assert "RuntimeError" in str(line["exception"])
    assert line["request_id"] == body["request_id"]


async def test_an_error_after_the_response_started_is_raised_not_answered() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-body")

    with pytest.raises(RuntimeError, match="mid-body"):
        await call(middleware(app))


async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await middleware(app)({"type": "lifespan"}, receive, send)
    assert seen == [{"type": "lifespan"}]


async def test_the_access_line_is_sampled_but_errors_always_logged(
    captured_logs: LogCapture,
) -> None:
    await call(middleware(answering(200), sample_rate=0.0))
    await call(middleware(answering(404), sample_rate=0.0))
    scope = http_scope(headers=[(b"x-request-id", b"rid-logged")])
    await call(middleware(answering(200), sample_rate=1.0), scope)
    lines = captured_logs.lines("request")
    assert [line["status"] for line in lines] == [404, 200]
    assert lines[1]["request_id"] == lines[1]["correlation_id"] == "rid-logged"
    assert (lines[1]["method"], lines[1]["client_ip"]) == ("GET", "203.0.113.9")


async def test_an_allowed_origins_preflight_is_answered_before_the_gate() -> None:
    cors = CorsPolicy.from_origins(["https://shop.example"])

    def refuse(scope: Scope) -> Response | None:
        return Response(status_code=429)

    origin = [(b"origin", b"https://shop.example")]
    preflight = http_scope("OPTIONS", headers=[*origin, (b"access-control-request-method", b"PUT")])
    answer = await call(middleware(answering(), gate=refuse, cors=cors), preflight)
    assert answer.status == 204
    assert answer.header("access-control-allow-origin") == "https://shop.example"
    assert answer.header("vary") == "Origin"
    refused = await call(
        middleware(answering(), gate=refuse, cors=cors), http_scope(headers=origin)
    )
    assert refused.status == 429
    assert refused.header("access-control-allow-origin") == "https://shop.example"

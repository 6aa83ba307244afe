"""The outermost middleware: everything that wraps one request as a whole.

- **request id**: a well-formed incoming `X-Request-ID` or a new one, echoed on every
  response, bound to every log line of the request;
- **errors**: an exception with a registered handler (ProblemError, HTTPException, ...) is
  rendered by it, anything else becomes a 500 `internal_error` problem (traceback in the log,
  nothing internal in the body), still carrying the request id;
- **access log**: one sampled line once the response is sent, and the request's metrics
  (`edgemart.requestmetrics`);
- **tenant** (multi mode only): the request's tenant, from its host
  (edgemart.tenantresolution), left in `scope["state"]["tenant"]` for everything after it
  (the rate limiter's keys first); an unknown host is 404 `tenant_not_found`. In single mode
  this costs one attribute test, and `tenant_of` gives the default tenant;
- **body limit**: 413 for a declared or received body over `max_body_bytes`;
- **gate**: an optional check before the app (the rate limiter) that may answer instead;
- **response headers**: `X-Content-Type-Options: nosniff` on every response, and
  `Cache-Control: no-store` on every error (4xx, 5xx) and every answer to an unsafe method,
  overriding whatever produced it: a shared cache (CloudFront caches errors by default) must
  never hand one client's refusal to another;
- **CORS** (`edgemart/cors.py`), when origins are configured: an allowed origin's preflight is
  answered here, before the gate (preflights are not rate limited), and its other responses
  get the origin's headers. With CORS off this costs one attribute test.

These are one middleware rather than seven because each ASGI layer, with its `send` wrapper,
costs every request several microseconds through a server (bench/ratelimit/GATEWAY.md): one
wrapper here also appends the headers the gate and inner code leave in
`scope["state"]["response_headers"]`, so they need no wrapper of their own. Being outermost,
it is also the app's error boundary, in place of both of Starlette's error layers
(ServerErrorMiddleware and ExceptionMiddleware): it publishes the handlers in
`scope["starlette.exception_handlers"]`, where each route's own wrapper (Starlette's
`request_response`) finds them for errors raised in an endpoint, and renders with them what is
raised outside a route (the router's 404 and 405, the body limit).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from edgemart.accesslog import log_access, should_log
from edgemart.bodylimit import declared_length, limited_receive, may_have_body
from edgemart.cors import CorsPolicy, is_preflight, preflight_response
from edgemart.errors import PayloadTooLargeError, TenantNotFoundError, problem_for_status
from edgemart.logging import bind_request_log_keys, logger, unbind_request_log_keys
from edgemart.requestid import incoming_request_id, new_request_id
from edgemart.requestmetrics import observe_request
from edgemart.settings import IPNetwork
from edgemart.tenancy import TENANT_STATE_KEY, Tenant
from edgemart.tenantresolution import TenantResolver

RESPONSE_HEADERS_KEY = "response_headers"
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Answers to these change something for one client: never to be stored or replayed by a cache.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Runs before the app; returns the response to send instead, or None to go on, or an
# awaitable of either when it has to wait (a gate that can decide at once spares a coroutine).
RequestGate = Callable[[Scope], Response | None | Awaitable[Response | None]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
ExceptionHandlers = Mapping[type[Exception], ExceptionHandler]


def handler_for(handlers: ExceptionHandlers, exc: Exception) -> ExceptionHandler | None:
    """The handler registered for the nearest class in the exception's MRO, as Starlette
    looks it up."""
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def log_unhandled(scope: Scope, exc: BaseException) -> None:
    logger.error("unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=exc)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sample_rate: float,
        slow_ms: float,
        max_body_bytes: int,
        trusted_proxies: Sequence[IPNetwork] = (),
        gate: RequestGate | None = None,
        exception_handlers: ExceptionHandlers | None = None,
        cors: CorsPolicy | None = None,
        tenants: TenantResolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.cors = cors
        self.tenants = tenants
        self.exception_handlers = dict(exception_handlers or {})
        # The shape Starlette's route wrapper reads: (by exception class, by status code).
        self._starlette_handlers: tuple[dict[Any, Any], dict[int, Any]] = (
            self.exception_handlers,
            {},
        )
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.sample_rate = sample_rate
        self.slow_ms = slow_ms
        self.trusted_proxies = tuple(trusted_proxies)
        self.rng = rng or random.Random()

    async def _websocket(
        self, tenants: TenantResolver, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A WebSocket upgrade in multi mode: its tenant is its host's, as a request's is (live
        updates' channels are the tenant's); an unknown host is refused before the upgrade."""
        try:
            tenant = tenants.resolve(scope)
            if tenant is not None and not isinstance(tenant, Tenant):
                tenant = await tenant
        except TenantNotFoundError as exc:
            await WebSocket(scope, receive, send).send_denial_response(exc.to_response())
            return
        if tenant is not None:
            scope.setdefault("state", {})[TENANT_STATE_KEY] = tenant
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.tenants is not None:
                await self._websocket(self.tenants, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_request_id(scope) or new_request_id()
        extra_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode()), NOSNIFF]
        never_store = scope["method"] in UNSAFE_METHODS
        cors_origin = None
        if self.cors is not None:
            cors_origin = self.cors.allowed_origin(scope)
            if cors_origin is not None:
                extra_headers.extend(self.cors.response_headers(cors_origin))
        scope["starlette.exception_handlers"] = self._starlette_handlers
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state[RESPONSE_HEADERS_KEY] = extra_headers
        log_keys: dict[str, object] = {"correlation_id": request_id, "request_id": request_id}
        lambda_context = scope.get("aws.context")
        if lambda_context is not None:
            log_keys["aws_request_id"] = getattr(lambda_context, "aws_request_id", None)
        status = 0

        # A plain function handing back `send`'s awaitable rather than a coroutine of its
        # own: each message then costs one call, not a coroutine wrapped around another.
        def send_with_context(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
                # A successful safe response (the hot path) needs no header edited in place.
                if never_store or status >= 400 or self.cors is not None:
                    headers = MutableHeaders(scope=message)
                    if never_store or status >= 400:
                        headers["cache-control"] = "no-store"
                    if self.cors is not None:
                        headers.add_vary_header("Origin")
            return send(message)

        token = bind_request_log_keys(log_keys)
        try:
            try:
                if cors_origin is not None and is_preflight(scope):
                    await preflight_response()(scope, receive, send_with_context)
                    return
                if self.tenants is not None:
                    tenant = self.tenants.resolve(scope)
                    if tenant is not None:
                        if not isinstance(tenant, Tenant):
                            tenant = await tenant
                        state[TENANT_STATE_KEY] = tenant
                if may_have_body(scope):
                    length = declared_length(scope)
                    if length is not None and length > self.max_body_bytes:
                        raise PayloadTooLargeError(self.max_body_bytes)
                    receive = limited_receive(receive, self.max_body_bytes)
                if self.gate is not None:
                    refusal = self.gate(scope)
                    if refusal is not None and not isinstance(refusal, Response):
                        refusal = await refusal
                    if refusal is not None:
                        await refusal(scope, receive, send_with_context)
                        return
                await self.app(scope, receive, send_with_context)
            except PayloadTooLargeError as exc:
                if status:
                    raise
                await exc.to_response()(scope, receive, send_with_context)
            except Exception as exc:
                if status:  # the response had started: nothing sane can be sent any more
                    log_unhandled(scope, exc)
                    raise
                response = await self._error_response(scope, receive, exc)
                await response(scope, receive, send_with_context)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            observe_request(scope, status or 500, duration_ms)
            if should_log(
                status or 500, duration_ms, self.sample_rate, self.slow_ms, self.rng.random()
            ):
                log_access(scope, status or 500, duration_ms, self.trusted_proxies)
            unbind_request_log_keys(token)

    async def _error_response(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The registered handler's response, or a 500 problem for an unhandled error (or a
        handler that failed), logged with its traceback."""
        handler = handler_for(self.exception_handlers, exc)
        if handler is not None:
            try:
                return await handler(Request(scope, receive), exc)
            except Exception as handler_exc:
                exc = handler_exc
        log_unhandled(scope, exc)
        return problem_for_status(500).to_response()

"""One trace per HTTP request: the span every other span of the request hangs under.

Outermost when tracing is on (`EdgemartApp` puts it around the request-context middleware),
so the rate limiter's check and the access log happen inside the span, and the access line
carries the trace id. The span is named by the matched route (`POST /purchases`) once
routing has run, and gets the request's id and status at its end. In Lambda its parent is
the invocation's own segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from edgemart.tracing.tracer import Tracing


class RequestTracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        lambda_context = scope.get("aws.context")
        parent = self.tracing.lambda_parent() if lambda_context is not None else None
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracing.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as span:
            if lambda_context is not None:
                span.set_attribute("faas.invocation_id", lambda_context.aws_request_id)
            try:
                await self.app(scope, receive, send_traced)
            finally:
                finish_request_span(span, scope, status)


def finish_request_span(span: Span, scope: Scope, status: int) -> None:
    """What is known once the request is answered: its route, status and request id."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        span.set_attribute("request_id", request_id)
    if status:
        span.set_attribute("http.response.status_code", status)
    if not status or status >= 500:
        span.set_status(StatusCode.ERROR)

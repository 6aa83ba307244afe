"""Request ids: accept a well-formed incoming `X-Request-ID`, otherwise generate one.

The id is echoed on every response (errors included), bound as the log correlation id, and
kept in a ContextVar so problem bodies can carry it without threading it through calls.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgemart.logging import request_log_keys

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_VALID_REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID_LENGTH}}}")

_current_request_id: ContextVar[str | None] = ContextVar("edgemart_request_id", default=None)


def current_request_id() -> str | None:
    return _current_request_id.get()


def is_valid_request_id(value: str) -> bool:
    return _VALID_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if is_valid_request_id(text) else None
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        log_keys: dict[str, object] = {"correlation_id": request_id, "request_id": request_id}
        lambda_context = scope.get("aws.context")
        if lambda_context is not None:
            log_keys["aws_request_id"] = getattr(lambda_context, "aws_request_id", None)

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = _current_request_id.set(request_id)
        try:
            with request_log_keys(**log_keys):
                await self.app(scope, receive, send_with_request_id)
        finally:
            _current_request_id.reset(token)

"""Request body size limit (413 `payload_too_large`), counting chunked bodies too.

A declared `Content-Length` over the limit is refused before the route runs; a body without
one is counted as it is received and refused as soon as it passes the limit. The
request-context middleware applies it, so it costs a bodiless GET nothing.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from edgemart.errors import PayloadTooLargeError

_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def may_have_body(scope: Scope) -> bool:
    """A GET/HEAD/OPTIONS without Content-Length or Transfer-Encoding carries no body."""
    if scope.get("method") not in _BODILESS_METHODS:
        return True
    for name, _ in scope["headers"]:
        if name == b"content-length" or name == b"transfer-encoding":
            return True
    return False


def limited_receive(receive: Receive, max_body_bytes: int) -> Receive:
    received = 0

    async def receive_counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise PayloadTooLargeError(max_body_bytes)
        return message

    return receive_counted

"""A GET sent to an ASGI app directly, headers exactly as given: for requests an HTTP client
will not send (a header holding a newline, no `Host` at all)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp


async def raw_get(
    app: ASGIApp,
    path: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    server: tuple[str, int] = ("testserver", 80),
) -> list[dict[str, Any]]:
    """The messages the app sent: `http.response.start` first, then the body's."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 1),
        "server": server,
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent

"""The HTTP server settings `edgemart serve` (and the tests' real servers) run uvicorn with.

- **No proxy headers.** uvicorn believes `X-Forwarded-For` / `X-Forwarded-Proto` from
  127.0.0.1 by default, which would let any local client (or a proxy forwarding what clients
  send) choose its own address and rate-limit quota. `TRUSTED_PROXIES` (edgemart.clientip) is
  the only authority on client addresses, so uvicorn's handling is off.
- **JSON log lines.** `uvicorn_log_config` routes uvicorn's own loggers through the project's
  JSON formatter (edgemart.logging), so `edgemart serve` writes one format only.
- **Bounded request heads.** httptools buffers a request's headers without limit (a 30 MB
  header or 20,000 headers were answered 200). Headers over `MAX_HEADER_BYTES` in total, or
  more than `MAX_HEADER_COUNT` of them, are answered 431 problem+json and the connection
  closed; a head that keeps growing without ending is cut off once it passes
  `MAX_HEAD_BYTES`, so one connection buffers a bounded amount before it is refused.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgemart.errors import problem_body, problem_for_status
from edgemart.logging import logger
from edgemart.requestid import new_request_id

MAX_HEADER_BYTES = 16 * 1024  # names + values + ": " and CRLF each
MAX_HEADER_COUNT = 100
# The request line (method, target, version) may add up to this much to a head.
MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEAD_BYTES = MAX_HEADER_BYTES + MAX_REQUEST_LINE_BYTES
WS_MAX_FRAME_BYTES = 64 * 1024


class RequestHeadTooLargeError(Exception):
    """Raised from a parser callback to stop parsing a head over the limits. httptools wraps
    it in its own parser error, which uvicorn answers through `send_400_response`: that is
    where the 431 is sent instead."""


def too_large_response() -> bytes:
    """A complete HTTP/1.1 431 response with a problem+json body; the connection closes."""
    request_id = new_request_id()
    problem = problem_for_status(
        431,
        f"Request headers are limited to {MAX_HEADER_BYTES} bytes in total "
        f"and {MAX_HEADER_COUNT} fields",
    )
    document = problem_body(
        problem.status, problem.code, problem.title, problem.detail, request_id=request_id
    )
    body = json.dumps(document, separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request head (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_too_large = False
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Headers still incomplete after this much: no legitimate head is this long.
        if self._reading_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._header_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > MAX_HEADER_COUNT or self._header_bytes > MAX_HEADER_BYTES:
            self._head_too_large = True
            raise RequestHeadTooLargeError()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._reading_head = False
        if not self.transport.is_closing():
            self.transport.write(too_large_response())
            self.transport.close()


def server_config(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every real edgemart server uses."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=HeaderLimitedHttpToolsProtocol,
        proxy_headers=False,
        server_header=False,
        # Live-update sockets (edgemart.live): no per-message compression, whose zlib state
        # would cost each idle socket far more than the socket itself; frames past 64 KiB are
        # refused by the server (1009) before the protocol's own 4 KiB check reads them.
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=WS_MAX_FRAME_BYTES,
        **options,
    )


class _DropColourMessage(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of some messages as `color_message`; the JSON
    formatter would print it as an extra key."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def json_log_handler() -> logging.Handler:
    """A handler writing uvicorn's records as the project's JSON lines (stdout)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logger.registered_formatter)
    handler.addFilter(_DropColourMessage())
    return handler


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """A `log_config` for uvicorn.Config: its loggers write JSON lines, at `level`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": {"()": "gateway.httpserver.json_log_handler"}},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["json"], "level": level, "propagate": False},
        },
    }

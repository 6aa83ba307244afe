"""The project's exception base and RFC 9457 problem+json responses.

Every error edgemart answers with is `application/problem+json` carrying a stable `code` and
the `request_id`. Route code raises `ProblemError` (or a subclass); the app factory turns it,
Starlette's own `HTTPException`s and anything unexpected into problem responses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgemart.requestid import current_request_id
from edgemart.routing import allowed_methods

PROBLEM_TYPE_BASE = "https://edgemart.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# Status → (code, title) for errors raised by the framework rather than by route code.
_STATUS_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    431: ("headers_too_large", "Request headers too large"),
    429: ("rate_limited", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("service_unavailable", "Service unavailable"),
}


class EdgemartError(Exception):
    """Base class of every exception edgemart raises on purpose."""


class ProblemError(EdgemartError):
    """An error that maps to one HTTP problem response."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_response(self) -> Response:
        return problem_response(
            self.status,
            self.code,
            self.title,
            self.detail,
            headers=self.headers,
            extra=self.extra,
        )


class PayloadTooLargeError(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            "Payload too large",
            f"Request bodies are limited to {limit} bytes",
        )


class TenantNotFoundError(ProblemError):
    """No marketplace answers at the request's host (multi mode), or no tenant has the slug a
    platform route names."""

    def __init__(self, detail: str = "No marketplace is served at this host") -> None:
        super().__init__(404, "tenant_not_found", "Tenant not found", detail)


class TenantMismatchError(ProblemError):
    """The token names another tenant than the request's, or none (multi mode)."""

    def __init__(self) -> None:
        super().__init__(
            403,
            "tenant_mismatch",
            "Token of another marketplace",
            "The token's org_id does not name this marketplace",
        )


def problem_for_status(
    status: int, detail: str | None = None, *, headers: Mapping[str, str] | None = None
) -> ProblemError:
    code, title = _STATUS_PROBLEMS.get(status, ("http_error", "HTTP error"))
    return ProblemError(status, code, title, detail, headers=headers)


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The problem document; `request_id` defaults to this request's (a replayed response
    carries the original one)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body["code"] = code
    body["request_id"] = request_id or current_request_id()
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> Response:
    body = problem_body(status, code, title, detail, extra, request_id)
    # ASCII escapes: an error may echo a field name holding an unpaired surrogate, which has
    # no UTF-8 form.
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


async def problem_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ProblemError):
        raise exc
    return exc.to_response()


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405/413 become problems with the same status and headers. A 405's
    `Allow` lists what the route table serves on the path across every function, not only
    the methods of the one route (in this function) the router matched."""
    if not isinstance(exc, HTTPException):
        raise exc
    detail = exc.detail if exc.detail != _default_phrase(exc.status_code) else None
    headers = dict(exc.headers or {})
    if "Allow" in headers:
        methods = allowed_methods(request.scope["path"]) or [
            method.strip() for method in headers["Allow"].split(",")
        ]
        headers["Allow"] = ", ".join(sorted(methods))
    return problem_for_status(exc.status_code, detail, headers=headers).to_response()


def _default_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def unavailable_handler(request: Request, exc: Exception) -> Response:
    """The database is unavailable (connection lost, pool exhausted, circuit open): 503 with
    Retry-After. Writes are refused as `read_only_mode`; reads that had no stale copy to fall
    back on get `service_unavailable`."""
    retry_after = max(1, round(getattr(exc, "retry_after_s", 5)))
    headers = {"Retry-After": str(retry_after)}
    if request.method in ("GET", "HEAD"):
        return problem_response(
            503,
            "service_unavailable",
            "Service unavailable",
            "The database is unavailable and no cached copy exists",
            headers=headers,
        )
    return problem_response(
        503,
        "read_only_mode",
        "Service in read-only mode",
        "The database is unavailable; nothing was changed",
        headers=headers,
    )

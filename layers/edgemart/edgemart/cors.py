"""CORS for the browser origins named in `CORS_ALLOW_ORIGINS` (none by default: no CORS).

Pure logic over the ASGI scope; the request-context middleware applies it, so CORS costs no
layer of its own and, when off, nothing at all. For an allowed `Origin`:

- a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered 204 before the
  rate limiter and the routes, whatever the path;
- every other response carries `Access-Control-Allow-Origin` (the origin itself, never `*`)
  and `Access-Control-Expose-Headers`, errors included, so a browser can read a problem.

Any other origin gets no `Access-Control-*` header, and its preflight reaches the router like
any `OPTIONS` (405). While CORS is on, every response says `Vary: Origin`, so a shared cache
never hands one origin's copy to another, or a copy made without CORS headers to a browser.
Credentials (cookies) are not allowed: the API authenticates with a bearer token, which a
preflight admits as the `Authorization` request header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Scope

ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-ID"
EXPOSE_HEADERS = (
    "RateLimit, RateLimit-Policy, Retry-After, X-Request-ID, ETag, Idempotent-Replayed, Location"
)
# Browsers cap it (Chromium at 2 hours, Firefox at 24): one preflight per origin and URL per
# two hours at most.
MAX_AGE_S = 7200
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalised_origin(origin: str) -> str:
    """An origin as a browser serialises it: lower case, without its scheme's default port."""
    origin = origin.strip().lower()
    default_port = _DEFAULT_PORTS.get(origin.partition("://")[0])
    return origin.removesuffix(default_port) if default_port else origin


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[bytes]

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> CorsPolicy | None:
        """The policy for these origins, or None (CORS off) when there are none."""
        allowed = frozenset(normalised_origin(origin).encode("latin-1") for origin in origins)
        return cls(allowed) if allowed else None

    def allowed_origin(self, scope: Scope) -> bytes | None:
        """The request's `Origin`, as sent, when it is allowed."""
        for name, value in scope["headers"]:
            if name == b"origin":
                return value if value.lower() in self.origins else None
        return None

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
        ]


def is_preflight(scope: Scope) -> bool:
    if scope["method"] != "OPTIONS":
        return False
    return any(name == b"access-control-request-method" for name, _ in scope["headers"])


def preflight_response() -> Response:
    """The 204 to an allowed origin's preflight; the middleware adds the origin's own headers
    (`Access-Control-Allow-Origin`, `Vary`) as it does to every response."""
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
        },
    )

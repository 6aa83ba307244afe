"""One JSON access-log line per request, sampled.

A configurable share of 2xx/3xx lines is kept (default 1%); every 4xx/5xx and every request
slower than the slow threshold is always logged. Routes annotate the line through
`scope["state"]` (`cache`, `rate_limit`; "-" when a route sets none), so the middleware
knows nothing about them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgemart.clientip import client_ip
from edgemart.logging import logger
from edgemart.settings import IPNetwork


def should_log(
    status: int, duration_ms: float, *, sample_rate: float, slow_ms: float, draw: float
) -> bool:
    """Pure sampling rule: errors and slow requests always, the rest with `sample_rate`."""
    return status >= 400 or duration_ms >= slow_ms or draw < sample_rate


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/products/{id}`), so lines group by route.

    A path that matched with the wrong method (405) is reported under its route too."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    partial: str | None = None
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", ""))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", ""))
    return partial or "<unmatched>"


class AccessLogMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sample_rate: float,
        slow_ms: float,
        trusted_proxies: Sequence[IPNetwork] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.sample_rate = sample_rate
        self.slow_ms = slow_ms
        self.trusted_proxies = tuple(trusted_proxies)
        self.rng = rng or random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            if should_log(
                status,
                duration_ms,
                sample_rate=self.sample_rate,
                slow_ms=self.slow_ms,
                draw=self.rng.random(),
            ):
                self._log(scope, status, duration_ms)

    def _log(self, scope: Scope, status: int, duration_ms: float) -> None:
        state = scope.get("state", {})
        logger.info(
            "request",
            extra={
                "method": scope.get("method"),
                "route": route_template(scope),
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "client_ip": client_ip(scope, self.trusted_proxies),
                "request_id": state.get("request_id"),
                "cache": state.get("cache", "-"),
                "rate_limit": state.get("rate_limit", "-"),
            },
        )

"""`build_app` (the standard Starlette app every HTTP function serves) and `lambda_handler`.

The middleware stack, outermost first:
request context (request id, errors, access log, in multi mode the tenant from the host,
body limit, the rate limiter as its gate, the no-store / nosniff response headers and, when
`CORS_ALLOW_ORIGINS` is set, CORS)
→ routes. Starlette's ServerErrorMiddleware and ExceptionMiddleware are left out: the
request-context middleware renders `ProblemError`, `HTTPException` and the database's
unavailability with the app's exception handlers, and anything unhandled as a 500 problem with
the request id, so those two layers would only cost every request their frames and `send`
wrappers (bench/ratelimit/GATEWAY.md).
The gateway composes the same routes through the same factory, so a request behaves the same
whether the gateway or a Lambda handler serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from edgemart.auth import subject_from_scope
from edgemart.cors import CorsPolicy
from edgemart.db import UNAVAILABLE_ERRORS
from edgemart.errors import (
    ProblemError,
    http_exception_handler,
    problem_error_handler,
    unavailable_handler,
)
from edgemart.invocation import lambda_entry_point
from edgemart.lambdaadapter import ApiGatewayAdapter
from edgemart.logging import logger
from edgemart.ratelimit.gate import RateLimitGate
from edgemart.ratelimit.policies import RateLimitTable
from edgemart.requestcontext import RequestContextMiddleware
from edgemart.services import Services
from edgemart.settings import Settings
from edgemart.tenantresolution import TenantResolver

if TYPE_CHECKING:
    from edgemart.tracing.tracer import Tracing

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


class EdgemartApp(Starlette):
    """Starlette with RequestContextMiddleware as its only error layer (see the module
    docstring). Handlers are registered by exception class; handlers for 500/Exception or a
    status code are refused rather than silently ignored. With `tracing`, a trace per
    request wraps the whole stack; without it, the stack is exactly as it was."""

    tracing: Tracing | None = None

    def build_middleware_stack(self) -> ASGIApp:
        handlers = self.exception_handlers
        if any(key in (500, Exception) for key in handlers):
            raise ValueError("unhandled errors are rendered by RequestContextMiddleware")
        if any(isinstance(key, int) for key in handlers):
            raise ValueError("register exception handlers by exception class, not status code")
        outermost_cls: object = self.user_middleware[0].cls if self.user_middleware else None
        if outermost_cls is not RequestContextMiddleware:
            raise ValueError("RequestContextMiddleware must be the outermost middleware")
        outermost, *inner = self.user_middleware
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(inner):
            app = cls(app, *args, **kwargs)
        cls, args, kwargs = outermost
        app = cls(app, *args, **kwargs, exception_handlers=handlers)
        return app if self.tracing is None else self.tracing.asgi(app)


def build_app(
    routes: Sequence[BaseRoute],
    *,
    services: Services | None = None,
    lifespan: Lifespan | None = None,
) -> Starlette:
    services = services or Services.from_settings(Settings.from_env())
    settings = services.settings
    logger.setLevel(settings.log_level)
    rate_limit = RateLimitGate(
        table=RateLimitTable.from_settings(settings),
        trusted_proxies=settings.trusted_proxies,
        subject_of=subject_from_scope,
    )
    middleware = [
        Middleware(
            RequestContextMiddleware,
            sample_rate=settings.access_log_sample_rate,
            slow_ms=settings.slow_request_ms,
            max_body_bytes=settings.max_body_bytes,
            trusted_proxies=settings.trusted_proxies,
            gate=rate_limit,
            cors=CorsPolicy.from_origins(settings.cors_allow_origins),
            tenants=(
                TenantResolver(settings.trusted_proxies) if settings.tenancy == "multi" else None
            ),
        ),
    ]
    app = EdgemartApp(
        routes=list(routes),
        middleware=middleware,
        exception_handlers={
            ProblemError: problem_error_handler,
            HTTPException: http_exception_handler,
            **dict.fromkeys(UNAVAILABLE_ERRORS, unavailable_handler),
        },
        lifespan=lifespan,
    )
    # `/x/` is an unknown path like any other (404), never a redirect: Starlette would build
    # the redirect's Location from the Host header, an open redirect with no Cache-Control.
    app.router.redirect_slashes = False
    app.state.services = services
    app.tracing = services.tracing
    return app


ApiGatewayHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(app: Starlette, function: str) -> ApiGatewayHandler:
    """The handler for API Gateway HTTP API (v2) and REST (v1) events (edgemart.lambdaadapter),
    wrapped as every invocation is (edgemart.invocation: Lambda context in the logs, the cold
    start, the metrics written once the response is ready); `function` names the function in
    metrics.

    No lifespan is run: pools open lazily on first use instead, once per environment. Building
    the adapter sets up nothing (the event loop is the thread's, taken at the first
    invocation), so importing a function's module (the gateway, tests, tools) does not either.
    """
    return lambda_entry_point(function, ApiGatewayAdapter(app), lambda: services_of_app(app))


def services_of_app(app: Starlette) -> Services:
    services: Services = app.state.services
    return services

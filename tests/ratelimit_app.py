"""A tiny app with routes in the limited groups, for rate-limit tests that need a real
server process (uvicorn imports `tests.ratelimit_app:app`, configured from the environment)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from edgemart.appfactory import build_app


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


ROUTES: list[BaseRoute] = [
    Route("/marketplace/search", ok),
    Route("/marketplace/home", ok),
    Route("/stores/{slug}", ok),
    Route("/products/{product_id}", ok, methods=["GET", "PATCH"]),
    Route("/purchases", ok, methods=["POST"]),
    Route("/health/live", ok),
]

app = build_app(ROUTES)

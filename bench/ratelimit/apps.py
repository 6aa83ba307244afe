"""The two apps `bench.ratelimit.gateway` serves with uvicorn: bare route vs build_app.

The full app's rate limit is set high enough that no request is refused, so both answer 200
and the difference is the middleware's work alone."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgemart.appfactory import build_app
from edgemart.logging import logger
from edgemart.services import Services
from edgemart.settings import Settings
from functions.realtime.app import routes as realtime_routes


async def search(request: Request) -> JSONResponse:
    return JSONResponse({"results": [], "next_cursor": None})


ROUTES = [Route("/marketplace/search", search)]

bare = Starlette(routes=ROUTES)
# The gateway's WebSocket route (`GET /ws`) is present, as in `edgemart serve`.
full = build_app(
    [*ROUTES, *realtime_routes],
    services=Services.from_settings(Settings(rate_limit_overrides=(("search", 100_000_000, 60),))),
)

if os.environ.get("EDGEMART_BENCH_DISCARD_LOGS"):
    # Sampled access lines are still formatted; only the write goes to /dev/null.
    logger.registered_handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115

"""`GET /metrics`: every declared metric in Prometheus text, served by the gateway alone.

Under `edgemart serve --workers N` whichever worker answers shows all the workers' counts
together (gateway.workermetrics). The answer is `Cache-Control: no-store` (a cached scrape
would hide a counter's progress) and no rate limit applies: the path is not in the route
table, which is where the limits come from. With `METRICS_BEARER_TOKEN` set the scrape must
send `Authorization: Bearer <token>`; anything else is a 401 problem like the API's own.

Gateway-only, like `/docs`: not in the route table or /openapi.json, and no function imports
it, so a Lambda never carries prometheus_client (Lambda exports CloudWatch EMF instead).
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgemart.auth import UnauthorizedError
from edgemart.services import services_of
from gateway.prometheus import exposition
from gateway.workermetrics import MetricsFolder, registry_totals, summed

METRICS_PATH = "/metrics"
NO_STORE = {"Cache-Control": "no-store"}
MISSING_TOKEN = "The metrics need an `Authorization: Bearer` token"
WRONG_TOKEN = "The bearer token is not the metrics token"


def check_bearer(authorization: str | None, token: str | None) -> None:
    """Nothing when `token` is unset or `authorization` presents it as a bearer token;
    otherwise an UnauthorizedError. The token is compared in constant time."""
    if token is None:
        return
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise UnauthorizedError(MISSING_TOKEN)
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise UnauthorizedError(WRONG_TOKEN)


def metrics_routes(folder: MetricsFolder | None = None) -> list[BaseRoute]:
    """The route; `folder` holds the other workers' totals (None: this process alone)."""

    async def metrics_page(request: Request) -> Response:
        settings = services_of(request).settings
        check_bearer(request.headers.get("authorization"), settings.metrics_bearer_token)
        # This worker's live totals, read on the event loop that records them; the other
        # workers' files, read off it.
        own = registry_totals()
        others = await asyncio.to_thread(folder.others) if folder is not None else []
        body, content_type = exposition(summed(own, *others), request.headers.get("accept"))
        return Response(body, headers=NO_STORE, media_type=content_type)

    return [Route(METRICS_PATH, metrics_page, methods=["GET"])]

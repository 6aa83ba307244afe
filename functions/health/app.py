"""Health function: `GET /health` (dependencies), `GET /health/live` (process only) and
`GET /openapi.json` (the API's OpenAPI document, built on its first request)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.cache import NO_STORE
from edgemart.db import Database
from edgemart.logging import logger
from edgemart.routing import by_name, starlette_routes
from edgemart.services import services_of


async def check_database(database: Database, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with database.connection(timeout_s=timeout_s) as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ok"; the reason goes to the log
        logger.warning("health: %s database check failed: %r", database.name, exc)
        return {"ok": False, "latency_ms": None}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


SCORING_STATUS_SQL = b"SELECT scorer, degraded_reason, last_run_at FROM scoring_status WHERE id = 1"


async def check_scoring(database: Database, timeout_s: float) -> dict[str, Any]:
    """The listing scorer's state after its last run (written by score_listings).

    A degraded scorer (heuristic scores because the model failed to load) is reported here
    but does not make the service unhealthy: every request is still served."""
    try:
        async with asyncio.timeout(timeout_s):
            async with database.connection(timeout_s=timeout_s) as conn:
                row = await (await conn.execute(SCORING_STATUS_SQL)).fetchone()
    except Exception as exc:  # reported as unknown; the database check says why
        logger.warning("health: scoring status unavailable: %r", exc)
        return {"ok": False, "scorer": None}
    if row is None:
        return {"ok": True, "scorer": None, "last_run_at": None}
    return {
        "ok": row["scorer"] == "model",
        "scorer": row["scorer"],
        "degraded_reason": row["degraded_reason"],
        "last_run_at": row["last_run_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def health(request: Request) -> JSONResponse:
    services = services_of(request)
    database = await check_database(services.primary, services.settings.health_db_timeout_s)
    limiter_ok = await services.rate_limiter.ping()
    scoring = (
        await check_scoring(services.primary, services.settings.health_db_timeout_s)
        if database["ok"]
        else {"ok": False, "scorer": None}
    )
    breaker = services.primary.breaker
    circuit_state = breaker.state if breaker is not None else "closed"
    healthy = database["ok"] and circuit_state == "closed"
    body = {
        "status": "healthy" if healthy else "degraded",
        "version": services.settings.version,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "checks": {
            "database": database,
            "rate_limit_backend": {"ok": limiter_ok, "backend": services.rate_limiter.backend},
            "circuit": {"state": circuit_state},
            "scoring": scoring,
        },
    }
    return JSONResponse(body, status_code=200 if healthy else 503, headers=NO_STORE)


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def openapi_document(request: Request) -> Response:
    from edgemart.openapi import rendered  # built on first use: not at cold start

    return Response(rendered(), media_type="application/json", headers=NO_STORE)


routes = starlette_routes("health", by_name(health, live, openapi_document))
app = build_app(routes)
handler = lambda_handler(app, "health")

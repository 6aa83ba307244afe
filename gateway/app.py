"""The gateway: every HTTP function's routes in one Starlette app.

Its routes are the functions' own `routes` lists (each built from the route table, which also
names the HTTP functions) and the app comes from the same `build_app` the Lambda handlers use.
Its WebSocket route (`GET /ws`, functions.realtime) is served by this process's live hub,
which the lifespan runs. Its additions, which no Lambda serves: the docs page, `GET /docs`
(gateway.docs), and the Prometheus metrics, `GET /metrics` (gateway.metricsroute).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from edgemart.appfactory import build_app
from edgemart.routetable import function_names
from edgemart.services import Services
from edgemart.settings import Settings
from functions.realtime.app import live_hub
from gateway.docs import docs_routes
from gateway.metricsroute import metrics_routes
from gateway.scheduler import gateway_schedules, running, running_when_leader
from gateway.workermetrics import MetricsFolder, writing_totals

HTTP_FUNCTION_MODULES = tuple(f"functions.{name}.app" for name in function_names())


def gateway_routes(metrics_folder: MetricsFolder | None = None) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for module_name in HTTP_FUNCTION_MODULES:
        routes.extend(importlib.import_module(module_name).routes)
    return routes + docs_routes() + metrics_routes(metrics_folder)


def create_gateway(
    services: Services | None = None,
    *,
    run_schedules: bool = False,
    metrics_folder: Path | None = None,
) -> Starlette:
    """The gateway app; `run_schedules` runs the scheduled functions in-process (serve): the
    heartbeat in this process, the jobs when this process leads the fleet (gateway.scheduler).

    For one of several `serve` workers (gateway.workers), `metrics_folder` is where the
    workers share their metrics, so that `/metrics` sums them.
    """
    gateway_services = services or Services.from_settings(Settings.from_env())
    hub = live_hub(gateway_services)
    folder = MetricsFolder(metrics_folder) if metrics_folder is not None else None
    # Built now, not at start-up, so a bad SCHEDULE_INTERVALS fails serve before it serves.
    schedules = gateway_schedules(gateway_services) if run_schedules else []
    in_every_process = [schedule for schedule in schedules if schedule.in_every_process]
    leaders_only = [schedule for schedule in schedules if not schedule.in_every_process]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if folder is not None:  # entered first, so its last write follows the jobs' end
                await stack.enter_async_context(writing_totals(folder))
            # Other processes' writes reach this one's cache (edgemart.broadcast).
            await stack.enter_async_context(gateway_services.listening())
            # Its WebSockets hear this process's writes and, through the broadcast, others'.
            await stack.enter_async_context(hub.running())
            await stack.enter_async_context(running(in_every_process, gateway_services))
            if leaders_only:
                await stack.enter_async_context(running_when_leader(leaders_only, gateway_services))
            yield
        await gateway_services.aclose()

    return build_app(gateway_routes(folder), services=gateway_services, lifespan=lifespan)

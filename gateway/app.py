"""The gateway: every HTTP function's routes in one Starlette app.

Its routes are the functions' own `routes` lists (each built from the route table, which also
names the HTTP functions) and the app comes from the same `build_app` the Lambda handlers use.
Its one addition is the docs page, `GET /docs` (gateway.docs), which no Lambda serves.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from edgemart.appfactory import build_app
from edgemart.routetable import function_names
from edgemart.services import Services
from edgemart.settings import Settings
from gateway.docs import docs_routes
from gateway.scheduler import Schedule, default_schedules, running

HTTP_FUNCTION_MODULES = tuple(f"functions.{name}.app" for name in function_names())


def gateway_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for module_name in HTTP_FUNCTION_MODULES:
        routes.extend(importlib.import_module(module_name).routes)
    return routes + docs_routes()


def create_gateway(services: Services | None = None, *, run_schedules: bool = False) -> Starlette:
    """The gateway app; `run_schedules` runs the scheduled functions in-process (serve)."""
    gateway_services = services or Services.from_settings(Settings.from_env())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        schedules = default_schedules() if run_schedules else []
        if run_schedules and gateway_services.purchase_queue is not None:
            from gateway.sqspoller import POLL_EVERY_S, poll_purchase_queue

            schedules.append(Schedule("order_worker", poll_purchase_queue, POLL_EVERY_S))
        async with running(schedules, gateway_services):
            yield
        await gateway_services.aclose()

    return build_app(gateway_routes(), services=gateway_services, lifespan=lifespan)

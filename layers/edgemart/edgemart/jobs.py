"""Running scheduled and queue jobs as Lambda handlers.

An HTTP function gets its event loop from Mangum; a job function gets one here: one loop per
execution environment, kept across invocations, so pools and clients opened on the first
invocation are reused by the next (the same reason Mangum keeps its loop). The job receives
the process's `Services`, built lazily on first use, and the event.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from edgemart.invocation import lambda_entry_point
from edgemart.logging import logger, request_log_keys
from edgemart.services import Services
from edgemart.settings import Settings

Job = Callable[[Services, Mapping[str, Any]], Awaitable[dict[str, Any]]]
LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class JobRunner:
    """Holds one job's loop and services; `handler` is the Lambda entry point."""

    def __init__(self, job: Job, *, services: Services | None = None) -> None:
        self.job = job
        self.services = services
        self._loop: asyncio.AbstractEventLoop | None = None

    def services_for_run(self) -> Services:
        if self.services is None:
            self.services = Services.from_settings(Settings.from_env())
        return self.services

    @functools.cached_property
    def handler(self) -> LambdaHandler:
        """The Lambda entry point (edgemart.invocation: Lambda context in the logs, the cold
        start, the metrics written at the end of each run, raised or not)."""
        return lambda_entry_point(self.job.__name__, self.run, self.services_for_run)

    def run(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        keys = {"aws_request_id": getattr(context, "aws_request_id", None)}
        with request_log_keys(**keys):
            services = self.services_for_run()
            if services.tracing is None:
                return self._run(self._loop, services, event)
            with services.tracing.invocation(self.job.__name__):  # one trace per invocation
                return self._run(self._loop, services, event)

    def _run(
        self, loop: asyncio.AbstractEventLoop, services: Services, event: Mapping[str, Any]
    ) -> dict[str, Any]:
        result = loop.run_until_complete(self.job(services, event))
        logger.info("job finished", extra={"job": self.job.__name__, "result": result})
        return result

    def close(self) -> None:
        """Close the services' connections and the loop (tests; Lambda never calls it)."""
        if self._loop is not None and not self._loop.is_closed():
            if self.services is not None:
                self._loop.run_until_complete(self.services.aclose())
            self._loop.close()

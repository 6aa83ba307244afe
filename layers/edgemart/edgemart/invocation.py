"""What wraps every Lambda invocation, HTTP or job.

- **logs**: Powertools Logger's Lambda context (`cold_start`, `function_name`,
  `function_memory_size`, `function_arn`, `function_request_id`) on every line of the
  invocation (`inject_lambda_context`). Powertools keeps them process-wide, which is right in
  Lambda: an execution environment runs one invocation at a time (the gateway never comes
  through here). The request id and correlation id are bound per request as before
  (edgemart.logging);
- **cold starts**: `cold_starts` counted on an environment's first invocation (not when
  provisioned concurrency initialised it ahead of any request);
- **metrics**: everything recorded during the invocation written as CloudWatch EMF at its
  end (edgemart.emf), also when the handler raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from edgemart import emf, metrics
from edgemart.logging import logger

if TYPE_CHECKING:
    from edgemart.services import Services

R = TypeVar("R")
Handler = Callable[[Any, Any], R]

PROVISIONED = "provisioned-concurrency"
LAMBDA_CONTEXT_KEYS = (
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
)
"""What Powertools' `inject_lambda_context` adds to every line."""


def is_provisioned() -> bool:
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == PROVISIONED


def lambda_entry_point(
    function: str, handler: Handler[R], services_of: Callable[[], Services]
) -> Handler[R]:
    """`handler` as the Lambda runtime should call it. `function` names it in metrics;
    `services_of` gives the services whose edge purges are sent and whose settings the
    metrics are written with at the end of each invocation (read each time: tests replace
    the services)."""
    cold = not is_provisioned()

    @logger.inject_lambda_context
    def entry_point(event: Any, context: Any) -> R:
        nonlocal cold
        if cold:
            cold = False
            metrics.record(metrics.COLD_STARTS, function=function)
        try:
            return handler(event, context)
        finally:
            end_of_invocation(services_of)
            # Nothing logs between invocations in Lambda; in a process that invokes handlers
            # and goes on (tests, tools), later lines must not claim this invocation.
            logger.remove_keys(LAMBDA_CONTEXT_KEYS)

    return entry_point


def end_of_invocation(services_of: Callable[[], Services]) -> None:
    """Before the environment may be frozen: the views and searches the invocation counted
    (written to Redis), the edge purges its writes queued (a frozen environment would hold
    them until its next invocation), then the metrics."""
    try:
        services = services_of()
    except Exception:  # unreadable settings: the invocation's own error says so
        logger.exception("metrics: no settings to write them with")
        return
    services.flush_counters_blocking()
    if services.edge_purge is not None:
        services.edge_purge.flush()
    settings = services.settings
    emf.flush(namespace=settings.metrics_namespace, service=settings.metrics_service)

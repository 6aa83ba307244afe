"""What wraps every Lambda invocation, HTTP or job.

- **logs**: the Lambda context on every line of the invocation, under the names Powertools'
  `inject_lambda_context` gives them (`cold_start`, `function_name`, `function_memory_size`,
  `function_arn`, `function_request_id`), bound process-wide, which is right in Lambda: an
  execution environment runs one invocation at a time (the gateway never comes through here).
  They are made only for a line that is written (edgemart.logging). Powertools' own settings
  of the decorator are kept: `POWERTOOLS_LOGGER_LOG_EVENT` logs each event, and a
  `POWERTOOLS_LOGGER_SAMPLE_RATE` is drawn again for each warm invocation. The request id and
  correlation id are bound per request as before;
- **cold starts**: `cold_starts` counted on an environment's first invocation (not when
  provisioned concurrency initialised it ahead of any request);
- **metrics**: everything recorded during the invocation written as CloudWatch EMF at its
  end (edgemart.emf), also when the handler raises. Whether Powertools' settings switch them
  off (`POWERTOOLS_METRICS_DISABLED`) is read once, when the entry point is made: the
  environment of a Lambda function does not change, and reading it costs an invocation a
  few µs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

from edgemart import emf, metrics
from edgemart.logging import bind_lambda_context, logger, unbind_lambda_context

if TYPE_CHECKING:
    from edgemart.services import Services

R = TypeVar("R")
Handler = Callable[[Any, Any], R]

PROVISIONED = "provisioned-concurrency"
LOG_EVENT = "POWERTOOLS_LOGGER_LOG_EVENT"


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
    log_event = resolve_truthy_env_var_choice(env=os.getenv(LOG_EVENT, "false"))
    metrics_disabled = emf.metrics_disabled()

    def entry_point(event: Any, context: Any) -> R:
        nonlocal cold
        cold_start, cold = cold, False
        if cold_start:
            metrics.record(metrics.COLD_STARTS, function=function)
        elif logger.sampling_rate:
            logger.refresh_sample_rate_calculation()
        bind_lambda_context(context, cold_start)
        try:
            if log_event:
                logger.info(event)
            return handler(event, context)
        finally:
            end_of_invocation(services_of, metrics_disabled=metrics_disabled)
            # Nothing logs between invocations in Lambda; in a process that invokes handlers
            # and goes on (tests, tools), later lines must not claim this invocation.
            unbind_lambda_context()

    return entry_point


def end_of_invocation(services_of: Callable[[], Services], *, metrics_disabled: bool) -> None:
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
    emf.flush(
        namespace=settings.metrics_namespace,
        service=settings.metrics_service,
        disabled=metrics_disabled,
    )

"""The metrics table exported as CloudWatch Embedded Metric Format, through Powertools Metrics.

`flush` writes what this process recorded since the last flush (`metrics.drain_pending`) to
stdout, where Lambda sends it to CloudWatch Logs and CloudWatch turns it into metrics. An EMF
document gives all its metrics the same dimension values, so there is one document per
distinct set of values: `requests` for search 2xx and `request_latency` for search are two.
Every document also carries Powertools' `service` dimension. A counter writes the sum
recorded since the last flush, a distribution each observation (CloudWatch derives the
percentiles from them).

Powertools' `Metrics` is imported by `aws_lambda_powertools` itself, which the Logger
(edgemart.logging) already imports at cold start: using it here costs no import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edgemart import metrics
from edgemart.logging import logger
from edgemart.metrics import Pending, Registry

DimensionValues = tuple[tuple[str, str], ...]


def documents(pending: Iterable[Pending]) -> dict[DimensionValues, list[Pending]]:
    """Pure: the pending series grouped by their dimension values, one group per EMF document,
    in the order first recorded."""
    grouped: dict[DimensionValues, list[Pending]] = {}
    for series in pending:
        grouped.setdefault(tuple(series.dimensions.items()), []).append(series)
    return grouped


def flush(*, namespace: str, service: str, registry: Registry = metrics.REGISTRY) -> None:
    """Write everything recorded since the last flush as EMF documents on stdout. Never
    raises: a metric that cannot be written is logged, not worth failing an invocation."""
    try:
        _write(documents(registry.drain_pending()), namespace, service)
    except Exception:
        logger.exception("metrics: writing EMF failed")


def _write(grouped: Mapping[DimensionValues, list[Pending]], namespace: str, service: str) -> None:
    from aws_lambda_powertools.metrics import Metrics

    # Powertools' Metrics keeps one metric set per process (shared by every instance): it is
    # filled and flushed one document at a time.
    emf = Metrics(namespace=namespace, service=service)
    for dimensions, group in grouped.items():
        emf.clear_metrics()
        for name, dimension_value in dimensions:
            emf.add_dimension(name=name, value=dimension_value)
        for series in group:
            for value in series.values:
                emf.add_metric(name=series.metric.name, unit=series.metric.unit, value=value)
        # Powertools flushes a metric by itself when it reaches 100 values.
        if emf.metric_set:
            emf.flush_metrics()
    emf.clear_metrics()

"""The metrics table exported as CloudWatch Embedded Metric Format, in Powertools Metrics' layout.

`flush` writes what this process recorded since the last flush (`metrics.drain_pending`) to
stdout, where Lambda sends it to CloudWatch Logs and CloudWatch turns it into metrics. An EMF
document gives all its metrics the same dimension values, so there is one document per
distinct set of values: `requests` for search 2xx and `request_latency` for search are two.
Every document also carries Powertools' `service` dimension. A counter writes the sum
recorded since the last flush, a distribution each observation (CloudWatch derives the
percentiles from them).

Powertools' `Metrics` lays out each kind of document (its dimensions, metrics and units:
`layout`) the first time one is written, and so validates it; after that, a document is its
layout with the timestamp and the values filled in. Filling, validating and serialising a
`Metrics` for every document cost an invocation about 30 µs a document (50 on a busy machine),
and a cached read writes three: nearly half of its invocation (bench/lambda_overhead/RESULTS.md,
the `d88da45` row against the one before). `POWERTOOLS_METRICS_DISABLED` is honoured as
Powertools honours it, and a document carries fewer than 100 metrics, CloudWatch's limit; a
distribution keeps at most 100 values between flushes (`metrics.MAX_PENDING_VALUES`).

Powertools' `Metrics` is imported by `aws_lambda_powertools` itself, which the Logger
(edgemart.logging) already imports at cold start: using it here costs no import time.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aws_lambda_powertools.metrics import Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from edgemart import metrics
from edgemart.logging import logger
from edgemart.metrics import Metric, Pending, Registry

DimensionValues = tuple[tuple[str, str], ...]
MAX_METRICS_PER_DOCUMENT = 99
"""Metrics in one document: under CloudWatch's 100, since Powertools writes a document by
itself when its 100th metric is added (a layout must not)."""
_MAX_LAYOUTS = 1_000
"""Kinds of document kept laid out; dimension values come from small fixed sets, so a process
has a few dozen."""


def documents(pending: Iterable[Pending]) -> dict[DimensionValues, list[Pending]]:
    """Pure: the pending series grouped by their dimension values, one group per EMF document,
    in the order first recorded."""
    grouped: dict[DimensionValues, list[Pending]] = {}
    for series in pending:
        grouped.setdefault(tuple(series.dimensions.items()), []).append(series)
    return grouped


class Layout(NamedTuple):
    """A kind of document as JSON text around its variable parts: the text after the
    timestamp up to the first value (the metric directive, the dimension values), and each
    metric's `"name":` key, in order."""

    after_timestamp: str
    value_keys: tuple[str, ...]


_layouts: dict[tuple[str, str, DimensionValues, tuple[Metric, ...]], Layout] = {}


def layout(
    namespace: str, service: str, dimensions: DimensionValues, series: Sequence[Metric]
) -> Layout:
    """How Powertools lays out a document of these metrics with these dimension values (it
    raises on what CloudWatch would refuse); made once per kind of document."""
    key = (namespace, service, dimensions, tuple(series))
    found = _layouts.get(key)
    if found is None:
        found = _powertools_layout(namespace, service, dimensions, key[3])
        if len(_layouts) >= _MAX_LAYOUTS:
            _layouts.clear()
        _layouts[key] = found
    return found


def _powertools_layout(
    namespace: str, service: str, dimensions: DimensionValues, series: tuple[Metric, ...]
) -> Layout:
    # Powertools keeps one metric set per process (shared by every instance): cleared before
    # and after, so nothing else is in it.
    emf = Metrics(namespace=namespace, service=service)
    emf.clear_metrics()
    try:
        for name, value in dimensions:
            emf.add_dimension(name=name, value=value)
        for metric in series:
            emf.add_metric(name=metric.name, unit=metric.unit, value=0)
        document: dict[str, Any] = dict(emf.serialize_metric_set())
    finally:
        emf.clear_metrics()
    names = [metric.name for metric in series]
    if list(document)[-len(names) :] != names:
        raise ValueError(f"unexpected EMF layout from Powertools: {list(document)}")
    directive = json.dumps(document.pop("_aws")["CloudWatchMetrics"], separators=(",", ":"))
    members = "".join(
        f",{json.dumps(name)}:{json.dumps(value)}"
        for name, value in document.items()
        if name not in names
    )
    return Layout(
        f',"CloudWatchMetrics":{directive}}}{members}',
        tuple(f",{json.dumps(name)}:" for name in names),
    )


def render(layout: Layout, head: str, group: Sequence[Pending]) -> str:
    """One document as a line of JSON: `head` (the document up to its timestamp), the layout,
    each metric's values (`float`'s repr is JSON's for a finite number)."""
    parts = [head, layout.after_timestamp]
    for key, series in zip(layout.value_keys, group, strict=True):
        values = series.values
        parts.append(key)
        if len(values) == 1:  # a counter's sum: the common case
            parts.append(f"[{float(values[0])!r}]")
        else:
            parts.append(f"[{','.join([repr(float(value)) for value in values])}]")
    parts.append("}\n")
    return "".join(parts)


def lines(
    grouped: Mapping[DimensionValues, list[Pending]],
    namespace: str,
    service: str,
    timestamp_ms: int,
) -> list[str]:
    """Every document of `grouped`, in order; a group of more metrics than a document holds
    makes several."""
    head = f'{{"_aws":{{"Timestamp":{timestamp_ms}'
    written = []
    for dimensions, group in grouped.items():
        for start in range(0, len(group), MAX_METRICS_PER_DOCUMENT):
            chunk = group[start : start + MAX_METRICS_PER_DOCUMENT]
            kind = layout(namespace, service, dimensions, [series.metric for series in chunk])
            written.append(render(kind, head, chunk))
    return written


def flush(
    *,
    namespace: str,
    service: str,
    registry: Registry = metrics.REGISTRY,
    disabled: bool | None = None,
) -> None:
    """Write everything recorded since the last flush as EMF documents on stdout, in one write.
    `disabled` is what `metrics_disabled()` said, when the caller asked once for many flushes;
    by default it is asked now. Never raises: a metric that cannot be written is logged, not
    worth failing an invocation."""
    try:
        grouped = documents(registry.drain_pending())
        if not grouped or (metrics_disabled() if disabled is None else disabled):
            return
        written = lines(grouped, namespace, service, int(time.time() * 1000))
        sys.stdout.write("".join(written))
    except Exception:
        logger.exception("metrics: writing EMF failed")


def metrics_disabled() -> bool:
    """Powertools' own rule for `POWERTOOLS_METRICS_DISABLED` (and `POWERTOOLS_DEV`). Reading
    the environment costs a few µs: a Lambda entry point asks once (edgemart.invocation)."""
    return is_metrics_disabled()

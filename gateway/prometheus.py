"""Prometheus text of edgemart's metrics table (pure: declarations and totals in, text out).

Every declared metric is exposed, named after Prometheus' conventions from its declaration:
`edgemart_` + its name, its unit as a base-unit suffix (`Milliseconds` and `Seconds` become
`_seconds`, values converted), and `_total` on counters. A label-less metric nothing has
recorded yet is exposed as 0, so its series exists from the start; a labelled one shows its
HELP and TYPE only until a series is recorded.

Distributions are histograms, not summaries: the declarations carry bucket bounds and the
registry keeps cumulative counts per bucket, and buckets add up across workers and instances
(`histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))`), where a summary's quantiles
cannot be added. `prometheus_client` writes the text (escaping, float formatting, and the
OpenMetrics format when a scraper asks for it); it is a gateway-only dependency that no
Lambda function imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as MetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgemart.metrics import TABLE, Metric, MetricTable
from gateway.workermetrics import SeriesTotals

NAMESPACE = "edgemart"

_TO_BASE_UNIT: dict[str, tuple[str, float]] = {
    "Count": ("", 1.0),
    "Seconds": ("seconds", 1.0),
    "Milliseconds": ("seconds", 1000.0),
}
"""CloudWatch unit → (Prometheus base unit, divisor that converts a value to it)."""


def prometheus_unit(metric: Metric) -> str:
    return _TO_BASE_UNIT[metric.unit][0]


def prometheus_name(metric: Metric) -> str:
    """The family name (a counter's samples add `_total`, a histogram's `_bucket` ...)."""
    unit = prometheus_unit(metric)
    return f"{NAMESPACE}_{metric.name}" + (f"_{unit}" if unit else "")


def in_base_unit(metric: Metric, value: float) -> float:
    return value / _TO_BASE_UNIT[metric.unit][1]


def bucket_bounds(metric: Metric) -> list[str]:
    """The histogram's `le` values in the base unit, `+Inf` last."""
    return [_go_float(in_base_unit(metric, bound)) for bound in metric.buckets] + ["+Inf"]


def _go_float(value: float) -> str:
    """As Prometheus' own clients write a bound (`0.005`, `10.0`, `1e+06`)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def cumulative(counts: Iterable[int]) -> list[int]:
    running, sums = 0, []
    for count in counts:
        running += count
        sums.append(running)
    return sums


def metric_families(table: MetricTable, totals: Iterable[SeriesTotals]) -> list[MetricFamily]:
    """One family per declared metric, in declaration order, holding its series' totals;
    totals of metrics the table does not declare are left out."""
    by_metric: dict[str, list[SeriesTotals]] = {}
    for found in totals:
        by_metric.setdefault(found.metric, []).append(found)
    return [_family(metric, by_metric.get(metric.name, [])) for metric in table.values()]


def _family(metric: Metric, totals: list[SeriesTotals]) -> MetricFamily:
    name, unit, labels = prometheus_name(metric), prometheus_unit(metric), list(metric.dimensions)
    if metric.kind == "counter":
        counter = CounterMetricFamily(name, metric.doc, labels=labels, unit=unit)
        for found in totals:
            counter.add_metric(_values(found), in_base_unit(metric, found.total))
        if not labels and not totals:
            counter.add_metric([], 0.0)
        return counter
    histogram = HistogramMetricFamily(name, metric.doc, labels=labels, unit=unit)
    bounds = bucket_bounds(metric)
    for found in totals:
        counts = found.bucket_counts or (0,) * len(bounds)
        histogram.add_metric(
            _values(found),
            list(zip(bounds, map(float, cumulative(counts)), strict=True)),
            in_base_unit(metric, found.total),
        )
    if not labels and not totals:
        histogram.add_metric([], [(bound, 0.0) for bound in bounds], 0.0)
    return histogram


def _values(totals: SeriesTotals) -> list[str]:
    return [value for _, value in totals.dimensions]


class TotalsCollector(Collector):
    """The families of one set of totals, for prometheus_client's encoders."""

    def __init__(self, table: MetricTable, totals: Iterable[SeriesTotals]) -> None:
        self.families = metric_families(table, totals)

    def collect(self) -> Iterator[MetricFamily]:
        return iter(self.families)


def exposition(
    totals: Iterable[SeriesTotals], accept: str | None = None, table: MetricTable = TABLE
) -> tuple[bytes, str]:
    """The body and content type for a scraper whose `Accept` header is `accept`: the text
    format (0.0.4) unless it asks for OpenMetrics."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(TotalsCollector(table, totals)), content_type

"""Prometheus text from the metrics table: names and units from the declarations, counters as
`_total`, distributions as cumulative histograms in seconds, every declared metric present,
and the text readable by Prometheus' own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from edgemart.metrics import TABLE, MetricTable, Registry
from gateway.prometheus import (
    bucket_bounds,
    cumulative,
    exposition,
    in_base_unit,
    metric_families,
    prometheus_name,
)
from gateway.workermetrics import registry_totals


@pytest.fixture
def table() -> MetricTable:
    table = MetricTable()
    table.counter("jobs", "Jobs run", dimensions=("outcome",))
    table.counter("wakeups", "Wake-ups")
    table.counter("time_open", "Time open", unit="Seconds")
    table.distribution(
        "latency", "Latency", unit="Milliseconds", buckets=(5.0, 50.0), dimensions=("group",)
    )
    table.distribution("idle", "Idle time", unit="Seconds", buckets=(1.0,))
    return table


def samples_of(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def by_bound(histogram: list[Sample]) -> dict[tuple[str, str | None], float]:
    """A histogram's samples by name and `le` bound (None for `_count` and `_sum`)."""
    return {(s.name, s.labels.get("le")): s.value for s in histogram}


def test_names_follow_prometheus_conventions(table: MetricTable) -> None:
    assert prometheus_name(table["jobs"]) == "edgemart_jobs"
    assert prometheus_name(table["time_open"]) == "edgemart_time_open_seconds"
    assert prometheus_name(table["latency"]) == "edgemart_latency_seconds"
    assert in_base_unit(table["latency"], 250.0) == 0.25
    assert in_base_unit(table["time_open"], 2.5) == 2.5
    assert bucket_bounds(table["latency"]) == ["0.005", "0.05", "+Inf"]


def test_cumulative_counts() -> None:
    assert cumulative([2, 0, 3, 1]) == [2, 2, 5, 6]
    assert cumulative([]) == []


def test_counters_are_totals_by_label_and_histograms_are_cumulative_in_seconds(
    table: MetricTable,
) -> None:
    registry = Registry()
    registry.record(table["jobs"], outcome="ok")
    registry.record(table["jobs"], 2, outcome="ok")
    registry.record(table["jobs"], outcome="failed")
    registry.record(table["time_open"], 1.5)
    for value in (1.0, 5.0, 7.0, 60.0):  # 5.0 is on a bound: `le` includes it
        registry.record(table["latency"], value, group="search")

    body, content_type = exposition(registry_totals(registry), table=table)
    samples = samples_of(body.decode())

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert {(s.labels["outcome"], s.value) for s in samples["edgemart_jobs"]} == {
        ("ok", 3.0),
        ("failed", 1.0),
    }
    assert [s.name for s in samples["edgemart_jobs"]] == ["edgemart_jobs_total"] * 2
    assert [(s.name, s.value) for s in samples["edgemart_time_open_seconds"]] == [
        ("edgemart_time_open_seconds_total", 1.5)
    ]
    assert by_bound(samples["edgemart_latency_seconds"]) == {
        ("edgemart_latency_seconds_bucket", "0.005"): 2.0,
        ("edgemart_latency_seconds_bucket", "0.05"): 3.0,
        ("edgemart_latency_seconds_bucket", "+Inf"): 4.0,
        ("edgemart_latency_seconds_count", None): 4.0,
        ("edgemart_latency_seconds_sum", None): pytest.approx(0.073),
    }
    assert all(s.labels["group"] == "search" for s in samples["edgemart_latency_seconds"])


def test_every_declared_metric_is_exposed_and_unlabelled_ones_start_at_zero(
    table: MetricTable,
) -> None:
    body, _ = exposition([], table=table)
    text = body.decode()
    samples = samples_of(text)

    assert set(samples) == {prometheus_name(metric) for metric in table.values()}
    assert samples["edgemart_jobs"] == []  # labelled: HELP and TYPE only
    assert "# HELP edgemart_jobs_total Jobs run\n# TYPE edgemart_jobs_total counter\n" in text
    assert [(s.name, s.value) for s in samples["edgemart_wakeups"]] == [
        ("edgemart_wakeups_total", 0.0)
    ]
    assert by_bound(samples["edgemart_idle_seconds"]) == {
        ("edgemart_idle_seconds_bucket", "1.0"): 0.0,
        ("edgemart_idle_seconds_bucket", "+Inf"): 0.0,
        ("edgemart_idle_seconds_count", None): 0.0,
        ("edgemart_idle_seconds_sum", None): 0.0,
    }


def test_edgemart_table_exposes_every_metric_in_declaration_order() -> None:
    families = metric_families(TABLE, [])
    assert [family.name for family in families] == [
        prometheus_name(metric) for metric in TABLE.values()
    ]
    body, _ = exposition([])
    parsed = [family.name for family in text_string_to_metric_families(body.decode())]
    assert parsed == [prometheus_name(metric) for metric in TABLE.values()]


def test_totals_of_undeclared_metrics_are_left_out(table: MetricTable) -> None:
    other = MetricTable()
    other.counter("stranger", "Not in the table")
    registry = Registry()
    registry.record(other["stranger"])
    body, _ = exposition(registry_totals(registry), table=table)
    assert b"stranger" not in body


def test_openmetrics_when_the_scraper_asks_for_it(table: MetricTable) -> None:
    registry = Registry()
    registry.record(table["time_open"], 2.0)
    body, content_type = exposition(
        registry_totals(registry), "application/openmetrics-text; version=1.0.0", table=table
    )
    text = body.decode()
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    assert "# UNIT edgemart_time_open_seconds seconds\n" in text
    assert "edgemart_time_open_seconds_total 2.0\n" in text


def test_label_values_are_escaped(table: MetricTable) -> None:
    registry = Registry()
    registry.record(table["jobs"], outcome='say "hi"\\')
    body, _ = exposition(registry_totals(registry), table=table)
    [sample] = samples_of(body.decode())["edgemart_jobs"]
    assert sample.labels == {"outcome": 'say "hi"\\'}

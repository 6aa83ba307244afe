"""The EMF export: one document per set of dimension values, written through Powertools."""

import json

import pytest

from edgemart import emf
from edgemart.metrics import MAX_PENDING_VALUES, MetricTable, Registry


@pytest.fixture
def table() -> MetricTable:
    return MetricTable()


def test_series_with_the_same_dimension_values_share_a_document(table: MetricTable) -> None:
    registry = Registry()
    hits = table.counter("hits", "doc", dimensions=("rule",))
    loads = table.counter("loads", "doc", dimensions=("rule",))
    other = table.counter("other", "doc", dimensions=("step",))
    registry.record(hits, rule="home")
    registry.record(hits, rule="search")
    registry.record(loads, rule="home")
    registry.record(other, step="home")  # same value, another dimension: another document
    grouped = emf.documents(registry.drain_pending())
    assert [
        (dimensions, [series.metric.name for series in group])
        for dimensions, group in grouped.items()
    ] == [
        ((("rule", "home"),), ["hits", "loads"]),
        ((("rule", "search"),), ["hits"]),
        ((("step", "home"),), ["other"]),
    ]


def emf_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_flush_writes_each_document_with_namespace_service_and_units(
    table: MetricTable, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry()
    requests = table.counter("requests", "doc", dimensions=("group", "status"))
    latency = table.distribution(
        "latency", "doc", unit="Milliseconds", buckets=(10.0,), dimensions=("group",)
    )
    registry.record(requests, 2, group="search", status="2xx")
    registry.record(latency, 3.5, group="search")
    registry.record(latency, 40.0, group="search")
    emf.flush(namespace="ns", service="svc", registry=registry)
    first, second = emf_lines(capsys.readouterr().out)
    assert first["_aws"]["CloudWatchMetrics"] == [  # type: ignore[index]
        {
            "Namespace": "ns",
            "Dimensions": [["group", "status", "service"]],
            "Metrics": [{"Name": "requests", "Unit": "Count"}],
        }
    ]
    assert (first["group"], first["status"], first["service"]) == ("search", "2xx", "svc")
    assert first["requests"] == [2.0]
    assert second["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["group", "service"]]  # type: ignore[index]
    assert second["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [  # type: ignore[index]
        {"Name": "latency", "Unit": "Milliseconds"}
    ]
    assert second["latency"] == [3.5, 40.0] and "status" not in second
    emf.flush(namespace="ns", service="svc", registry=registry)
    assert capsys.readouterr().out == ""  # nothing new, nothing written


def test_a_full_distribution_is_written_whole(
    table: MetricTable, capsys: pytest.CaptureFixture[str]
) -> None:
    """Powertools writes a metric by itself at 100 values; the next document must not inherit
    its dimensions."""
    registry = Registry()
    latency = table.distribution("latency", "doc", unit="Milliseconds", buckets=(10.0,))
    hits = table.counter("hits", "doc", dimensions=("rule",))
    for value in range(MAX_PENDING_VALUES):
        registry.record(latency, float(value))
    registry.record(hits, rule="home")
    emf.flush(namespace="ns", service="svc", registry=registry)
    full, after = emf_lines(capsys.readouterr().out)
    assert full["latency"] == [float(value) for value in range(MAX_PENDING_VALUES)]
    assert full["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]  # type: ignore[index]
    assert after["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["rule", "service"]]  # type: ignore[index]
    assert after["hits"] == [1.0]

"""The EMF export: one document per set of dimension values, in Powertools Metrics' layout."""

import json
from typing import Any

import pytest
from aws_lambda_powertools.metrics import Metrics

from edgemart import emf
from edgemart.metrics import MAX_PENDING_VALUES, Metric, MetricTable, Registry


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


def request_metrics(table: MetricTable) -> tuple[Metric, Metric]:
    """A request counter by group and status, and a latency distribution by group."""
    requests = table.counter("requests", "doc", dimensions=("group", "status"))
    latency = table.distribution(
        "latency", "doc", unit="Milliseconds", buckets=(10.0,), dimensions=("group",)
    )
    return requests, latency


def emf_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_flush_writes_each_document_with_namespace_service_and_units(
    table: MetricTable, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry()
    requests, latency = request_metrics(table)
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


def powertools_document(
    namespace: str,
    service: str,
    dimensions: dict[str, str],
    values: dict[str, tuple[str, list[float]]],
) -> dict[str, Any]:
    """The document Powertools itself writes for these metrics (name: unit and values)."""
    emf = Metrics(namespace=namespace, service=service)
    emf.clear_metrics()
    for name, value in dimensions.items():
        emf.add_dimension(name=name, value=value)
    for name, (unit, observed) in values.items():
        for value in observed:
            emf.add_metric(name=name, unit=unit, value=value)
    document = dict(emf.serialize_metric_set())
    emf.clear_metrics()
    return document


def test_documents_are_the_ones_powertools_writes(
    table: MetricTable, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry()
    requests, latency = request_metrics(table)
    lookups = table.counter("lookups", "doc", dimensions=("group",))
    for _ in range(2):  # the second flush fills the layouts the first one made
        registry.record(requests, 3, group="search", status="2xx")
        registry.record(latency, 0.25, group="search")
        registry.record(latency, 12, group="search")
        registry.record(lookups, group="search")
        registry.record(requests, group="home", status="4xx")
        emf.flush(namespace="ns", service="svc", registry=registry)
        written = emf_lines(capsys.readouterr().out)
        for line in written:
            line["_aws"]["Timestamp"] = 0  # type: ignore[index]
        expected = [
            powertools_document(
                "ns", "svc", {"group": "search", "status": "2xx"}, {"requests": ("Count", [3])}
            ),
            powertools_document(
                "ns",
                "svc",
                {"group": "search"},
                {"latency": ("Milliseconds", [0.25, 12]), "lookups": ("Count", [1])},
            ),
            powertools_document(
                "ns", "svc", {"group": "home", "status": "4xx"}, {"requests": ("Count", [1])}
            ),
        ]
        for document in expected:
            document["_aws"]["Timestamp"] = 0
        assert written == expected
        assert [list(line) for line in written] == [list(document) for document in expected]


def test_a_group_of_more_metrics_than_a_document_holds_is_split(
    table: MetricTable, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry()
    many = [table.counter(f"m{index}", "doc", dimensions=("rule",)) for index in range(150)]
    for metric in many:
        registry.record(metric, rule="home")
    emf.flush(namespace="ns", service="svc", registry=registry)
    first, second = emf_lines(capsys.readouterr().out)
    assert len(first["_aws"]["CloudWatchMetrics"][0]["Metrics"]) == 99  # type: ignore[index]
    assert len(second["_aws"]["CloudWatchMetrics"][0]["Metrics"]) == 51  # type: ignore[index]
    assert first["m98"] == [1.0] and second["m99"] == [1.0] and second["rule"] == "home"


def test_disabled_metrics_are_drained_and_not_written(
    table: MetricTable, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()
    hits = table.counter("hits", "doc")
    registry.record(hits)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    emf.flush(namespace="ns", service="svc", registry=registry)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    emf.flush(namespace="ns", service="svc", registry=registry)
    monkeypatch.setenv("POWERTOOLS_DEV", "true")  # development mode: off unless asked for
    registry.record(hits)
    emf.flush(namespace="ns", service="svc", registry=registry)
    monkeypatch.delenv("POWERTOOLS_DEV")
    assert capsys.readouterr().out == ""
    registry.record(hits)
    emf.flush(namespace="ns", service="svc", registry=registry)
    assert emf_lines(capsys.readouterr().out)[0]["hits"] == [1.0]


def test_a_kind_of_document_is_laid_out_once() -> None:
    table = MetricTable()
    hits = table.counter("hits", "doc", dimensions=("rule",))
    first = emf.layout("ns", "svc", (("rule", "home"),), [hits])
    assert emf.layout("ns", "svc", (("rule", "home"),), [hits]) is first
    assert emf.layout("ns", "svc", (("rule", "search"),), [hits]) is not first

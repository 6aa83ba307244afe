"""The metrics table and the in-memory series: declarations, dimension checks, totals,
histograms and what a drain hands the EMF export."""

import pytest

from edgemart import metrics
from edgemart.metrics import (
    MAX_PENDING_VALUES,
    TABLE,
    CounterSeries,
    DistributionSeries,
    MetricError,
    MetricTable,
    Registry,
)


@pytest.fixture
def table() -> MetricTable:
    return MetricTable()


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_table_declares_each_metric_once_with_a_doc_and_a_cloudwatch_unit() -> None:
    assert len(TABLE) >= 20
    for name, metric in TABLE.items():
        assert metric.name == name
        assert metric.doc and metric.unit in ("Count", "Milliseconds", "Seconds")
        assert metric.kind in ("counter", "distribution")
        assert (metric.kind == "distribution") == bool(metric.buckets)


def test_module_constants_are_the_table_entries() -> None:
    declared = {
        value.name: value for value in vars(metrics).values() if isinstance(value, metrics.Metric)
    }
    assert declared.keys() == TABLE.keys()
    assert all(TABLE[name] is metric for name, metric in declared.items())


def test_the_issue_s_metrics_are_declared_with_low_cardinality_dimensions() -> None:
    expected = {
        "requests": ("route_group", "status_class"),
        "request_latency": ("route_group",),
        "rate_limited_requests": ("route_group",),
        "rate_limit_fallbacks": ("backend",),
        "cache_lookups": ("layer", "cache_rule", "result"),
        "invalidations_sent": ("transport",),
        "invalidations_received": ("transport",),
        "db_retries": (),
        "circuit_state_changes": ("breaker", "state"),
        "circuit_open_time": ("breaker",),
        "purchases": ("outcome",),
        "queued_orders": ("outcome",),
        "listings_scored": ("scorer",),
        "scoring_fallbacks": (),
        "scoring_failures": (),
        "scoring_model_unavailable": (),
        "counter_fallbacks": ("buffer",),
        "counter_entries_dropped": ("buffer",),
        "refresh_views_step_failures": ("step",),
        "cold_starts": ("function",),
    }
    assert {name: TABLE[name].dimensions for name in expected} == expected
    assert TABLE["request_latency"].unit == "Milliseconds"
    assert TABLE["circuit_open_time"].unit == "Seconds"


@pytest.mark.parametrize(
    ("name", "dimensions"),
    [
        ("Requests", ()),
        ("requests-total", ()),
        ("requests", ("routeGroup",)),
        ("requests", ("service",)),  # the export's own dimension
        ("requests", ("outcome", "outcome")),
    ],
)
def test_a_bad_declaration_is_refused(
    table: MetricTable, name: str, dimensions: tuple[str, ...]
) -> None:
    with pytest.raises(MetricError):
        table.counter(name, "doc", dimensions=dimensions)
    assert name not in table


def test_a_metric_is_declared_once(table: MetricTable) -> None:
    table.counter("widgets", "doc")
    with pytest.raises(MetricError, match="twice"):
        table.counter("widgets", "other doc")


@pytest.mark.parametrize("buckets", [(), (10.0, 5.0), (5.0, 5.0)])
def test_a_distribution_needs_ascending_buckets(
    table: MetricTable, buckets: tuple[float, ...]
) -> None:
    with pytest.raises(MetricError, match="buckets"):
        table.distribution("latency", "doc", unit="Milliseconds", buckets=buckets)


def test_counter_totals_by_dimension_values(table: MetricTable, registry: Registry) -> None:
    outcomes = table.counter("outcomes", "doc", dimensions=("kind", "code"))
    registry.record(outcomes, kind="a", code="x")
    registry.record(outcomes, 2, code="x", kind="a")  # keyword order does not matter
    registry.record(outcomes, 5, kind="b", code="x")
    assert registry.count(outcomes, kind="a", code="x") == 3
    assert registry.count(outcomes, code="x") == 8
    assert registry.count(outcomes) == 8
    assert registry.count(outcomes, kind="c") == 0


@pytest.mark.parametrize(
    "dimensions",
    [
        {},  # missing
        {"kind": "a"},  # one missing
        {"kind": "a", "code": "x", "extra": "y"},  # one too many
        {"kind": "a", "cod": "x"},  # misspelt
    ],
)
def test_recording_with_other_dimensions_than_declared_is_an_error(
    table: MetricTable, registry: Registry, dimensions: dict[str, str]
) -> None:
    outcomes = table.counter("outcomes", "doc", dimensions=("kind", "code"))
    registry.record(outcomes, kind="a", code="x")
    with pytest.raises(MetricError, match="outcomes"):
        registry.record(outcomes, **dimensions)
    with pytest.raises(MetricError):
        registry.series(outcomes, **dimensions)
    assert registry.count(outcomes) == 1


def test_a_dimension_value_must_be_a_non_empty_string(
    table: MetricTable, registry: Registry
) -> None:
    outcomes = table.counter("outcomes", "doc", dimensions=("code",))
    with pytest.raises(MetricError, match="non-empty"):
        registry.record(outcomes, code="")
    with pytest.raises(MetricError, match="non-empty"):
        registry.record(outcomes, code=404)  # type: ignore[arg-type]


def test_reading_by_an_undeclared_dimension_is_an_error(
    table: MetricTable, registry: Registry
) -> None:
    outcomes = table.counter("outcomes", "doc", dimensions=("code",))
    with pytest.raises(MetricError):
        registry.count(outcomes, status="x")


def test_a_bound_series_is_the_one_record_adds_to(table: MetricTable, registry: Registry) -> None:
    hits = table.counter("hits", "doc", dimensions=("layer",))
    bound = registry.series(hits, layer="l1")
    assert isinstance(bound, CounterSeries)
    bound.add()
    registry.record(hits, 2, layer="l1")
    assert bound.total == 3 and registry.count(hits) == 3
    assert registry.series(hits, layer="l1") is bound
    assert bound.dimensions == {"layer": "l1"}


def test_a_distribution_counts_sums_and_buckets_its_observations(
    table: MetricTable, registry: Registry
) -> None:
    latency = table.distribution(
        "latency", "doc", unit="Milliseconds", buckets=(10.0, 100.0), dimensions=("group",)
    )
    for value in (1.0, 10.0, 10.5, 99.0, 100.0, 2500.0):
        registry.record(latency, value, group="g")
    found = registry.series(latency, group="g")
    assert isinstance(found, DistributionSeries)
    # Upper bounds are inclusive, as Prometheus' `le`; the last bucket has no bound.
    assert found.bucket_counts == [2, 3, 1]
    assert found.count == 6 and found.total == pytest.approx(2720.5)
    assert registry.count(latency, group="g") == 6


def test_a_drain_hands_over_what_was_recorded_since_the_last(
    table: MetricTable, registry: Registry
) -> None:
    hits = table.counter("hits", "doc", dimensions=("layer",))
    latency = table.distribution("latency", "doc", unit="Milliseconds", buckets=(10.0,))
    registry.record(hits, layer="l1")
    registry.record(hits, 2, layer="l1")
    registry.record(hits, layer="edge")
    registry.record(latency, 3.5)
    registry.record(latency, 12.0)
    drained = {
        (p.metric.name, tuple(p.dimensions.items())): p.values for p in registry.drain_pending()
    }
    assert drained == {
        ("hits", (("layer", "l1"),)): [3.0],
        ("hits", (("layer", "edge"),)): [1.0],
        ("latency", ()): [3.5, 12.0],
    }
    assert registry.drain_pending() == []  # nothing new
    registry.record(hits, layer="edge")
    [pending] = registry.drain_pending()
    assert (pending.metric, pending.dimensions, pending.values) == (hits, {"layer": "edge"}, [1.0])
    # Totals are for the life of the process: drains do not touch them.
    assert registry.count(hits) == 5 and registry.count(latency) == 2


def test_a_distribution_keeps_at_most_emf_s_values_between_drains(
    table: MetricTable, registry: Registry
) -> None:
    latency = table.distribution("latency", "doc", unit="Milliseconds", buckets=(10.0,))
    for value in range(MAX_PENDING_VALUES + 50):
        registry.record(latency, float(value))
    [pending] = registry.drain_pending()
    assert pending.values == [float(value) for value in range(MAX_PENDING_VALUES)]
    assert registry.count(latency) == MAX_PENDING_VALUES + 50


def test_series_are_listed_in_the_order_first_recorded(
    table: MetricTable, registry: Registry
) -> None:
    first, second = table.counter("first", "doc"), table.counter("second", "doc")
    registry.record(second)
    registry.record(first)
    registry.record(second)
    assert [found.metric for found in registry.all_series()] == [second, first]


def test_the_process_registry_records_by_declaration() -> None:
    before = metrics.count(metrics.DB_RETRIES)
    metrics.record(metrics.DB_RETRIES)
    assert metrics.count(metrics.DB_RETRIES) == before + 1
    with pytest.raises(MetricError):
        metrics.record(metrics.PURCHASES)  # its outcome is missing

"""Workers' metrics shared through files: a registry's totals, their sum over workers, the
files (atomic, per worker, dead workers' kept) and the writer that keeps them current."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edgemart.metrics import MetricTable, Registry
from gateway.workermetrics import (
    MetricsFolder,
    SeriesTotals,
    registry_totals,
    summed,
    totals_from_json,
    totals_to_json,
    writing_totals,
)


@pytest.fixture
def table() -> MetricTable:
    table = MetricTable()
    table.counter("jobs", "Jobs run", dimensions=("queue", "outcome"))
    table.distribution("latency", "Latency", unit="Milliseconds", buckets=(10.0,))
    return table


def test_registry_totals_are_plain_values_in_declared_dimension_order(
    table: MetricTable,
) -> None:
    registry = Registry()
    registry.record(table["jobs"], 2, outcome="ok", queue="orders")
    registry.record(table["latency"], 4.0)
    registry.record(table["latency"], 40.0)
    assert registry_totals(registry) == [
        SeriesTotals("jobs", (("queue", "orders"), ("outcome", "ok")), 2.0),
        SeriesTotals("latency", (), 44.0, 2, (1, 1)),
    ]


def test_summed_adds_series_by_series_across_workers() -> None:
    one = [
        SeriesTotals("jobs", (("outcome", "ok"),), 2.0),
        SeriesTotals("latency", (), 5.0, 1, (1, 0)),
    ]
    two = [
        SeriesTotals("jobs", (("outcome", "ok"),), 3.0),
        SeriesTotals("jobs", (("outcome", "failed"),), 1.0),
        SeriesTotals("latency", (), 50.0, 1, (0, 1)),
    ]
    assert summed(one, two) == [
        SeriesTotals("jobs", (("outcome", "ok"),), 5.0),
        SeriesTotals("latency", (), 55.0, 2, (1, 1)),
        SeriesTotals("jobs", (("outcome", "failed"),), 1.0),
    ]
    assert summed() == []


def test_totals_survive_json() -> None:
    totals = [
        SeriesTotals("jobs", (("queue", "a b"), ("outcome", 'x"y')), 2.5),
        SeriesTotals("latency", (), 5.0, 3, (1, 2)),
    ]
    assert totals_from_json(totals_to_json(totals)) == totals


def test_each_worker_reads_the_others_files_and_not_its_own(tmp_path: Path) -> None:
    first, second = MetricsFolder(tmp_path), MetricsFolder(tmp_path)
    assert first.own_file != second.own_file  # even within one pid
    first.write([SeriesTotals("jobs", (), 1.0)])
    second.write([SeriesTotals("jobs", (), 2.0)])
    assert first.others() == [[SeriesTotals("jobs", (), 2.0)]]
    assert second.others() == [[SeriesTotals("jobs", (), 1.0)]]


def test_a_write_replaces_the_file_whole_and_skips_unchanged_totals(tmp_path: Path) -> None:
    folder, reader = MetricsFolder(tmp_path / "metrics"), MetricsFolder(tmp_path / "metrics")
    folder.write([SeriesTotals("jobs", (), 1.0)])
    folder.write([SeriesTotals("jobs", (), 4.0)])
    assert reader.others() == [[SeriesTotals("jobs", (), 4.0)]]
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == [folder.own_file.name]

    folder.own_file.write_text("[]", encoding="utf-8")  # as if someone else had written
    folder.write([SeriesTotals("jobs", (), 4.0)])  # unchanged since its last write
    assert folder.own_file.read_text(encoding="utf-8") == "[]"


def test_a_dead_workers_file_still_counts_and_an_unreadable_one_is_left_out(
    tmp_path: Path,
) -> None:
    (tmp_path / "999999-dead.json").write_text(
        totals_to_json([SeriesTotals("jobs", (), 7.0)]), encoding="utf-8"
    )
    (tmp_path / "999998-torn.json").write_text('[{"metric": "jobs"', encoding="utf-8")
    (tmp_path / "999997-odd.json").write_text(json.dumps({"not": "a list"}), encoding="utf-8")
    assert MetricsFolder(tmp_path).others() == [[SeriesTotals("jobs", (), 7.0)]]


@pytest.mark.anyio
async def test_the_writer_keeps_the_file_current_and_writes_once_more_at_the_end(
    tmp_path: Path, table: MetricTable
) -> None:
    registry = Registry()
    folder, reader = MetricsFolder(tmp_path), MetricsFolder(tmp_path)

    def written() -> float:
        return sum(t.total for group in reader.others() for t in group)

    async with writing_totals(folder, registry, every_s=0.01):
        registry.record(table["jobs"], 3, queue="q", outcome="ok")
        for _ in range(500):
            await asyncio.sleep(0.01)
            if written() == 3:
                break
        assert written() == 3
        registry.record(table["jobs"], 2, queue="q", outcome="ok")
    assert written() == 5  # the last write, at the block's end

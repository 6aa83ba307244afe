"""Every `edgemart serve` worker's metrics, summed for `/metrics` whichever worker answers.

Recording stays what edgemart.metrics makes it, an in-memory add in the worker that records.
Each worker writes its cumulative totals to a file of its own in the serve run's metrics
folder every `SNAPSHOT_EVERY_S` and when it stops; nothing is written on the request path. A
scrape adds this worker's live totals to every other worker's last file. The file of a worker
that died stays, so a total never goes down while `serve` runs (a worker killed outright loses
at most its last second); a file is named by pid and a random suffix, so a restarted worker
that inherits a dead one's pid does not overwrite its counts. See
docs/decisions/0029-prometheus-with-workers.md.

The files are JSON of `SeriesTotals`: one series' running totals, in plain values.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from edgemart.logging import logger
from edgemart.metrics import REGISTRY, DistributionSeries, Registry

SNAPSHOT_EVERY_S = 1.0
SNAPSHOT_SUFFIX = ".json"

Dimensions = tuple[tuple[str, str], ...]
"""A series' (dimension, value) pairs in the metric's declared order."""


@dataclass(frozen=True, slots=True)
class SeriesTotals:
    """What one series recorded since its process started: a counter's `total`; a
    distribution's `total` (sum), `count` and observations per bucket (`bucket_counts`, not
    cumulative, the last above every bound)."""

    metric: str
    dimensions: Dimensions
    total: float
    count: int = 0
    bucket_counts: tuple[int, ...] = ()

    def plus(self, other: SeriesTotals) -> SeriesTotals:
        """The sum of two processes' totals of one series."""
        if len(self.bucket_counts) != len(other.bucket_counts):
            raise ValueError(f"{self.metric}: bucket counts of different lengths")
        return SeriesTotals(
            self.metric,
            self.dimensions,
            self.total + other.total,
            self.count + other.count,
            tuple(a + b for a, b in zip(self.bucket_counts, other.bucket_counts, strict=True)),
        )


def registry_totals(registry: Registry = REGISTRY) -> list[SeriesTotals]:
    """The running totals of every series in `registry`."""
    totals = []
    for series in registry.all_series():
        dimensions = tuple((name, series.dimensions[name]) for name in series.metric.dimensions)
        if isinstance(series, DistributionSeries):
            found = SeriesTotals(
                series.metric.name,
                dimensions,
                series.total,
                series.count,
                tuple(series.bucket_counts),
            )
        else:
            found = SeriesTotals(series.metric.name, dimensions, series.total)
        totals.append(found)
    return totals


def summed(*groups: Iterable[SeriesTotals]) -> list[SeriesTotals]:
    """The totals of several processes added up, series by series (first-seen order)."""
    by_series: dict[tuple[str, Dimensions], SeriesTotals] = {}
    for group in groups:
        for totals in group:
            key = (totals.metric, totals.dimensions)
            found = by_series.get(key)
            by_series[key] = totals if found is None else found.plus(totals)
    return list(by_series.values())


def totals_to_json(totals: Iterable[SeriesTotals]) -> str:
    return json.dumps(
        [
            {
                "metric": t.metric,
                "dimensions": [list(pair) for pair in t.dimensions],
                "total": t.total,
                "count": t.count,
                "bucket_counts": list(t.bucket_counts),
            }
            for t in totals
        ],
        separators=(",", ":"),
    )


def totals_from_json(text: str) -> list[SeriesTotals]:
    return [
        SeriesTotals(
            item["metric"],
            tuple((str(name), str(value)) for name, value in item["dimensions"]),
            float(item["total"]),
            int(item["count"]),
            tuple(int(n) for n in item["bucket_counts"]),
        )
        for item in json.loads(text)
    ]


class MetricsFolder:
    """The serve run's folder of per-worker totals, as one worker sees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.own_file = path / f"{os.getpid()}-{secrets.token_hex(4)}{SNAPSHOT_SUFFIX}"
        self._last_written: str | None = None

    def write(self, totals: Iterable[SeriesTotals]) -> None:
        """Replace this worker's file (atomically: a reader sees the old or the new one);
        nothing is written when the totals have not changed."""
        text = totals_to_json(totals)
        if text == self._last_written:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.own_file.with_suffix(".tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self.own_file)
        self._last_written = text

    def others(self) -> list[list[SeriesTotals]]:
        """Every other worker's last totals, dead workers' included; an unreadable file is
        logged and left out."""
        found = []
        for file in sorted(self.path.glob("*" + SNAPSHOT_SUFFIX)):
            if file == self.own_file:
                continue
            try:
                found.append(totals_from_json(file.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("worker metrics file %s is unreadable; left out", file)
        return found


@asynccontextmanager
async def writing_totals(
    folder: MetricsFolder, registry: Registry = REGISTRY, every_s: float = SNAPSHOT_EVERY_S
) -> AsyncIterator[None]:
    """Write this worker's totals to its file every `every_s` while the block runs, and once
    more at its end (the worker's shutdown)."""

    async def keep_writing() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                folder.write(registry_totals(registry))
            except OSError:
                logger.exception("could not write this worker's metrics to %s", folder.path)

    task = asyncio.create_task(keep_writing())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        folder.write(registry_totals(registry))

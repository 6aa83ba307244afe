"""Part 1, capacity: for each traffic mix and each server, the highest offered rate that
holds (every request answered 2xx, p99 within the limit, the rate reached), searched for
afresh in each round; the two servers searched back to back on each mix, their order
alternating between rounds, so each round's ratio compares searches the same machine saw."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.capacity.loadgen import Judgement, LoadReport, open_loop_connections
from bench.capacity.ratesearch import RateSearch
from bench.capacity.stage import Stage
from bench.capacity.traffic import Mix

FIRST_SHARE = 0.5
"""The first round's first rate: this share of the closed loop's requests/s (low, so that the
first round's steps up also trace the flat part of the latency curve for the plot)."""
FIRST_STEP = 1.25
LATER_STEP = 1.1
"""Later rounds start at the capacity found so far (median) and step by less."""


@dataclass
class Search:
    """One round's search of one mix on one server."""

    mix: Mix
    workers: int
    round: int
    rates: RateSearch
    runs: list[LoadReport] = field(default_factory=list)

    @property
    def capacity(self) -> float:
        return self.rates.capacity

    def run_at(self, rate: float | None) -> LoadReport | None:
        return next((run for run in self.runs if run.offered == rate), None)


@dataclass
class Sweep:
    judgement: Judgement
    closed_loop: dict[tuple[str, int], LoadReport] = field(default_factory=dict)
    """The first round's closed-loop run of each mix and server, at the mix's
    `closed_loop_connections` (the issue's figures were measured so)."""
    searches: list[Search] = field(default_factory=list)

    def of(self, mix: Mix, workers: int) -> list[Search]:
        return [s for s in self.searches if s.mix.name == mix.name and s.workers == workers]

    def capacities(self, mix: Mix, workers: int) -> list[float]:
        return [search.capacity for search in self.of(mix, workers)]


def sweep(
    stage: Stage,
    mixes: Sequence[Mix],
    workers: Sequence[int],
    *,
    rounds: int,
    judgement: Judgement,
    resolution: float,
    max_runs: int,
    calibration_seconds: float,
    before_round: Callable[[], None],
) -> Sweep:
    found = Sweep(judgement)
    for index in range(rounds):
        before_round()
        for mix in mixes:
            for count in workers if index % 2 == 0 else list(reversed(workers)):
                if index == 0:
                    found.closed_loop[mix.name, count] = calibrate(
                        stage, mix, count, calibration_seconds
                    )
                rates = rate_search(found, mix, count, index, resolution, max_runs)
                search = Search(mix, count, index, rates)
                run_search(stage, search, judgement)
                found.searches.append(search)
                print(
                    f"capacity round {index + 1}/{rounds}, {mix.label}, {count} worker(s): "
                    f"{search.capacity:,.0f} requests/s",
                    flush=True,
                )
    return found


def calibrate(stage: Stage, mix: Mix, workers: int, seconds: float) -> LoadReport:
    """The closed loop the issue measured each mix with. A 4xx there stops the benchmark: the
    requests are wrong (a token, a wallet, a product), not the server slow."""
    report = stage.run(
        workers,
        mix.purchase_share,
        rate=0,
        connections=mix.closed_loop_connections,
        seconds=seconds,
    )
    refused = {status for status in report.statuses if 400 <= status < 500}
    if refused:
        raise RuntimeError(
            f"{mix.label} on {workers} worker(s), closed loop of "
            f"{mix.closed_loop_connections}, refused: {report.status_summary()}"
        )
    print(
        f"closed loop, {mix.label}, {workers} worker(s), c={mix.closed_loop_connections}: "
        f"{report.achieved:,.0f} requests/s, p50 {report.p50_ms:.1f} ms, "
        f"p99 {report.p99_ms:.1f} ms",
        flush=True,
    )
    return report


def rate_search(
    found: Sweep, mix: Mix, workers: int, index: int, resolution: float, max_runs: int
) -> RateSearch:
    """The first round starts from the closed loop's rate; later ones from the capacity the
    earlier rounds found (median), stepping by less."""
    earlier = [capacity for capacity in found.capacities(mix, workers) if capacity > 0]
    if index == 0 or not earlier:
        start, step = FIRST_SHARE * found.closed_loop[mix.name, workers].achieved, FIRST_STEP
    else:
        start, step = statistics.median(earlier), LATER_STEP
    return RateSearch(start, step, resolution=resolution, max_runs=max_runs)


def run_search(stage: Stage, search: Search, judgement: Judgement) -> None:
    while (rate := search.rates.next_rate()) is not None:
        report = stage.run(
            search.workers,
            search.mix.purchase_share,
            rate=rate,
            connections=open_loop_connections(rate),
        )
        search.runs.append(report)
        search.rates.record(rate, judgement.held(report))
        print(
            f"  {search.mix.label}, {search.workers} worker(s), offered {rate:,.0f}/s: "
            f"reached {report.achieved:,.0f}/s, p50 {report.p50_ms:.1f} ms, "
            f"p99 {report.p99_ms:.1f} ms, late p99 {report.late_percentile_ms(0.99):.0f} ms, "
            f"{report.status_summary()} -> {judgement.why_not(report)}",
            flush=True,
        )

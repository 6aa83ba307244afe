"""Part 2, purchases through HTTP against `purchase()` called directly: at the same number
of clients, over the same products of the same database, purchases through `edgemart serve`
(wrk, closed loop: each connection sends its next purchase when its last is answered) and
through bench.purchase's Python driver (each client its own connection and buyer, calling
`purchase()` as the purchase route does), alternating in paired rounds. Target (issue #26):
HTTP ≥ 50% of direct."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.capacity.loadgen import LoadReport
from bench.capacity.stage import Stage
from bench.capacity.traffic import Targets
from bench.purchase.run import drive, ours
from bench.summary import percentile

CLIENTS = (8, 32)
TARGET = 0.5
DIRECT = 0
"""The direct driver's key among the contenders (servers are keyed by worker count)."""


@dataclass(frozen=True)
class DirectRun:
    per_second: float
    purchases: int
    p50_ms: float
    p99_ms: float
    client_cores: float
    """CPU the Python driver itself used (it shares the cores with the database)."""


@dataclass
class Pairing:
    clients: int
    http: dict[int, list[LoadReport]] = field(default_factory=dict)
    """By worker count, one run per round."""
    direct: list[DirectRun] = field(default_factory=list)


def pairing(
    stage: Stage,
    workers: Sequence[int],
    targets: Targets,
    *,
    rounds: int,
    seconds: float,
    clients: Sequence[int] = CLIENTS,
) -> list[Pairing]:
    cells = []
    for count in clients:
        cell = Pairing(count, {each: [] for each in workers})
        contenders = [*workers, DIRECT]
        for index in range(rounds):
            shift = index % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                if contender == DIRECT:
                    cell.direct.append(direct_run(stage.url, count, seconds, targets))
                else:
                    cell.http[contender].append(
                        stage.run(
                            contender,
                            1.0,
                            rate=0,
                            connections=count,
                            seconds=seconds,
                            targets=targets,
                        )
                    )
            print(f"purchases, {count} clients: round {index + 1}/{rounds} done", flush=True)
        cells.append(cell)
    return cells


def direct_run(url: str, clients: int, seconds: float, targets: Targets) -> DirectRun:
    """bench.purchase's driver (it vacuums products and wallets first, as `Stage.run` does
    before a run with purchases)."""
    rate, latencies, cores = asyncio.run(
        drive(url, clients, seconds, list(targets.purchase_products), ours)
    )
    return DirectRun(
        rate, len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99), cores
    )

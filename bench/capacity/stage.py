"""What every measured run of the capacity benchmark shares: the database, the running
servers, Redis, the traffic's targets, and how long and how hard wrk drives them."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.capacity.catalog import vacuum
from bench.capacity.loadgen import LoadReport, run_wrk
from bench.capacity.servermetrics import between, scrape, settled_scrape
from bench.capacity.traffic import Targets, lua_script
from bench.serving import PostgresProcesses, Server


@dataclass
class Stage:
    url: str
    servers: Mapping[int, Server]
    """By worker count."""
    redis_pid: int
    postgres: PostgresProcesses | None
    targets: Targets
    folder: Path
    seconds: float
    threads: int
    """wrk's threads (each paces its share of the rate)."""
    miss_share: float
    """Share of searches that miss every cache."""
    _scripts: itertools.count[int] = field(default_factory=itertools.count)

    def run(
        self,
        workers: int,
        purchase_share: float,
        *,
        rate: float,
        connections: int,
        seconds: float | None = None,
        targets: Targets | None = None,
    ) -> LoadReport:
        """One wrk run on the `workers` server: `rate` requests/s offered (0: a closed loop
        of `connections`), `purchase_share` of them purchases. A run with purchases starts
        from vacuumed products and wallets. The server's own latency histogram is read before
        and after (`servermetrics`); the wait for the latter also lets a server the run
        overloaded finish its queue before the next run."""
        number = next(self._scripts)
        script = self.folder / f"load-{number}.lua"
        script.write_text(
            lua_script(
                targets or self.targets,
                purchase_share,
                rate=rate,
                threads=self.threads,
                miss_share=self.miss_share,
                nonce=uuid.uuid4().hex[:16],
                seed=number,
            )
        )
        if purchase_share > 0:
            vacuum(self.url)
        server = self.servers[workers]
        before = scrape(server)
        report = run_wrk(
            server,
            script,
            seconds=seconds or self.seconds,
            connections=connections,
            threads=self.threads,
            offered=rate,
            redis_pid=self.redis_pid,
            postgres=self.postgres,
        )
        return replace(report, server_latency=between(before, settled_scrape(server)))

"""Whole-system capacity: the highest request rate `edgemart serve` holds at p99 ≤ 100 ms with
no errors, for reads, purchases and a 4:1 mix, and purchases through HTTP against
`purchase()` called directly.

    python -m bench.capacity.run [--parts capacity,pairing] [--seconds S] [--rounds N]
                                 [--workers 1,2] [--search-miss-share X] [--threads N]
                                 [--pair-seconds S] [--quick] [--out bench/capacity]

DATABASE_URL (as admin, else an embedded PostgreSQL) gets a database of its own,
`edgemart_bench_capacity_<N>`, seeded once with the demo catalog and kept between runs (the
orders each run makes stay: their count at the start is reported). Redis is a private
`redis-server` (Debian package `redis-server`) started for the run; wrk (Debian package
`wrk`) generates the load from a Lua script written for each run (bench.capacity.traffic).

1. **capacity**: each traffic mix on each `edgemart serve --workers N`, offered at fixed
   rates (paced by the script, an emulated open loop), searched for the highest rate that
   holds: every response 2xx, no socket error, p99 ≤ 100 ms, ≥ 97% of the rate reached.
   Paired rounds; CPU of the server's processes, PostgreSQL, wrk, Redis and the rest of the
   machine; latency.png plots p99 against offered load per mix.
2. **pairing**: purchases over 10,000 products through HTTP (wrk, closed loop) and through
   bench.purchase's driver calling `purchase()` directly, at 8 and 32 clients, alternating.

Afterwards: nothing oversold (stock never below zero, stock + sold count of every product
unchanged, units sold equal to the units of the orders made) and no scheduled job ran.

A full run takes about 20–25 minutes on the 2-core development machine (first time: about a
minute more to seed); `--quick` is a smoke check of about 3 minutes (one round, short runs,
coarse search) that writes to a temporary folder unless `--out` is given. RESULTS.md and
latency.png are written to `--out` (this folder by default).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.capacity import catalog
from bench.capacity.loadgen import Judgement, warm
from bench.capacity.pairing import Pairing, pairing
from bench.capacity.plot import plot
from bench.capacity.report import (
    Setting,
    capacity_section,
    integrity_section,
    method,
    pairing_section,
    runs_appendix,
    summary_section,
)
from bench.capacity.stage import Stage
from bench.capacity.sweep import Sweep, sweep
from bench.capacity.traffic import MIXES, Targets, warm_script
from bench.database import admin_url
from bench.report import database_command, provenance, publish
from bench.serving import PostgresProcesses, Server, private_redis, start_server, stop_server
from edgemart.settings import RATE_LIMIT_GROUPS, Settings

PARTS = ("capacity", "pairing")
TOKEN_LIFETIME_S = 6 * 3600
WARM_S = 5.0


@dataclass(frozen=True)
class Plan:
    """What to run, from the command line."""

    parts: frozenset[str]
    setting: Setting
    out: Path
    reseed: bool


def parse(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="of capacity, pairing")
    parser.add_argument("--seconds", type=float, help="per offered rate (default 10; quick 3)")
    parser.add_argument("--rounds", type=int, help="paired rounds (default 3; quick 1)")
    parser.add_argument("--workers", default="1,2", help="serve --workers counts to compare")
    parser.add_argument(
        "--search-miss-share",
        type=float,
        default=0.1,
        help="share of searches that miss every cache (default %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--pair-seconds", type=float, help="per run of the pairing (default 6; quick 3)"
    )
    parser.add_argument("--products", type=int, default=100_000, help="catalog size")
    parser.add_argument("--reseed", action="store_true", help="seed the catalog afresh")
    parser.add_argument("--quick", action="store_true", help="a smoke check of about 3 minutes")
    parser.add_argument("--out", type=Path, help="folder for RESULTS.md and latency.png")
    args = parser.parse_args(argv)
    parts = frozenset(part.strip() for part in args.parts.split(",") if part.strip())
    if not parts or parts - set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}")
    workers = sorted({int(count) for count in args.workers.split(",")})
    if not workers or min(workers) < 1:
        parser.error("--workers takes positive counts, e.g. 1,2")
    if not 0 <= args.search_miss_share <= 1:
        parser.error("--search-miss-share is a share, 0 to 1")
    quick = args.quick
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="capacity-quick-")) if quick else Path(__file__).parent
    )
    setting = Setting(
        seconds=args.seconds or (3.0 if quick else 10.0),
        rounds=args.rounds or (1 if quick else 3),
        workers=workers,
        threads=args.threads,
        miss_share=args.search_miss_share,
        resolution=0.15 if quick else 0.05,
        max_runs=4 if quick else 9,
        calibration_seconds=2.0 if quick else 5.0,
        pair_seconds=args.pair_seconds or (3.0 if quick else 6.0),
        products=args.products,
        read_products=catalog.READ_PRODUCTS,
        paired_products=catalog.PAIRED_PRODUCTS,
        stores=catalog.STORES,
        searches=catalog.SEARCHES,
        buyers=catalog.BUYERS,
        cores=os.cpu_count() or 1,
    )
    return Plan(parts, setting, out, args.reseed)


def serve_environment(workers: int, jwt_secret: str) -> dict[str, str]:
    return {
        "SHARED_CACHE_NAMESPACE": f"benchcapacity-{workers}",
        **{f"RATE_LIMIT_{group.upper()}": "off" for group in RATE_LIMIT_GROUPS},
        "JWT_SECRET": jwt_secret,
        "CURSOR_SECRET": "bench-capacity",
    }


@contextmanager
def servers(
    workers: Sequence[int], url: str, redis_url: str, folder: Path, jwt_secret: str
) -> Iterator[dict[int, Server]]:
    with ExitStack() as stack:
        started = {}
        for count in workers:
            started[count] = start_server(
                count, url, redis_url, folder, serve_environment(count, jwt_secret)
            )
            stack.callback(stop_server, started[count])
        yield started


@dataclass
class Outcome:
    found: Sweep | None
    cells: list[Pairing]
    conservation: catalog.Conservation
    jobs: list[str]
    orders_before: int


def measure(plan: Plan, admin: str, folder: Path) -> Outcome:
    setting = plan.setting
    url = catalog.catalog(admin, setting.products, reseed=plan.reseed)
    currency = Settings().marketplace_currency
    paired_products = catalog.listed_products(url, setting.paired_products, currency)
    read_products = paired_products[: setting.read_products]
    buyers = catalog.buyers(setting.buyers)
    jwt_secret = secrets.token_hex(32)
    targets = Targets(
        searches=catalog.searches(setting.searches),
        products=read_products,
        stores=catalog.store_slugs(url, setting.stores),
        tokens=catalog.tokens(buyers, jwt_secret, TOKEN_LIFETIME_S),
        purchase_products=read_products,
    )
    catalog.stock_up(url, paired_products)
    catalog.fund(url, buyers)
    before = catalog.Ledger.read(url)
    quiet_since = catalog.quiet_schedules(url)
    judgement = Judgement()
    found, cells = None, []
    with (
        private_redis(folder) as (redis_url, redis_pid),
        servers(setting.workers, url, redis_url, folder, jwt_secret) as running,
    ):
        warm_path = folder / "warm.lua"
        warm_path.write_text(warm_script(targets))
        for server in running.values():  # every worker's L1 and the shared cache filled
            warm(server, warm_path, seconds=WARM_S, connections=16)
        stage = Stage(
            url,
            running,
            redis_pid,
            PostgresProcesses.of(url),
            targets,
            folder,
            setting.seconds,
            setting.threads,
            setting.miss_share,
        )
        if "capacity" in plan.parts:
            found = sweep(
                stage,
                MIXES,
                setting.workers,
                rounds=setting.rounds,
                judgement=judgement,
                resolution=setting.resolution,
                max_runs=setting.max_runs,
                calibration_seconds=setting.calibration_seconds,
                before_round=lambda: catalog.fund(url, buyers),
            )
        if "pairing" in plan.parts:
            catalog.fund(url, buyers)
            paired = Targets(
                targets.searches, read_products, targets.stores, targets.tokens, paired_products
            )
            cells = pairing(
                stage, setting.workers, paired, rounds=setting.rounds, seconds=setting.pair_seconds
            )
    conservation = catalog.Conservation.between(before, catalog.Ledger.read(url))
    jobs = catalog.jobs_started_since(url, quiet_since)
    return Outcome(found, cells, conservation, jobs, before.completed_orders)


@dataclass(frozen=True)
class Load:
    """The machine's load average (1, 5, 15 min) when the run began and ended."""

    before: tuple[float, float, float]
    after: tuple[float, float, float]
    minutes: float

    def sentence(self) -> str:
        return (
            "Load average (1, 5, 15 min) "
            f"{', '.join(f'{value:.1f}' for value in self.before)} when the run began, "
            f"{', '.join(f'{value:.1f}' for value in self.after)} when it ended "
            f"({self.minutes:.1f} minutes)"
        )


def write(plan: Plan, outcome: Outcome, load: Load) -> None:
    setting = plan.setting
    plan.out.mkdir(parents=True, exist_ok=True)
    sections = [
        "",
        *summary_section(
            outcome.found, outcome.cells, outcome.conservation, outcome.jobs, MIXES, setting
        ),
        "",
        *method(setting, Judgement()),
    ]
    if outcome.found is not None:
        plot(outcome.found, MIXES, setting.workers, plan.out / "latency.png")
        sections += [
            "",
            *capacity_section(outcome.found, MIXES, setting),
            "",
            "![p99 against offered load per traffic mix](latency.png)",
        ]
    if outcome.cells:
        sections += ["", *pairing_section(outcome.cells, setting)]
    answered = 0
    if outcome.found is not None:
        runs = [run for search in outcome.found.searches for run in search.runs]
        runs += list(outcome.found.closed_loop.values())
        answered += sum(run.statuses.get(201, 0) for run in runs)
    for cell in outcome.cells:
        answered += sum(run.statuses.get(201, 0) for runs in cell.http.values() for run in runs)
    direct = sum(run.purchases for cell in outcome.cells for run in cell.direct)
    sections += ["", *integrity_section(outcome.conservation, answered, direct, outcome.jobs)]
    if outcome.found is not None:
        sections += ["", *runs_appendix(outcome.found, MIXES)]
    publish(
        plan.out / "RESULTS.md",
        [
            "# Whole-system capacity: `edgemart serve` under the traffic model",
            "",
            *provenance(
                database_command("bench.capacity.run"),
                setup="PostgreSQL, a private Redis, edgemart serve and wrk on the same machine",
            ),
            "",
            f"{load.sentence()}; the *rest* columns below say what else the machine ran "
            f"during each run. Completed orders in the database at the start: "
            f"{outcome.orders_before:,} (earlier runs' purchases stay).",
            *sections,
        ],
    )


def main() -> None:
    plan = parse()
    for tool, package in (("wrk", "wrk"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install {package})")
    load_before = os.getloadavg()
    started = time.monotonic()
    with admin_url() as admin, tempfile.TemporaryDirectory(prefix="benchcapacity-") as temp:
        outcome = measure(plan, admin, Path(temp))
    load = Load(load_before, os.getloadavg(), (time.monotonic() - started) / 60)
    write(plan, outcome, load)
    print(f"\nwritten to {plan.out}", flush=True)


if __name__ == "__main__":
    main()

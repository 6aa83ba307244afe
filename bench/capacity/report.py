"""RESULTS.md of the capacity benchmark: each section's markdown lines, from the figures."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.capacity.catalog import Conservation
from bench.capacity.loadgen import (
    MAX_CONNECTIONS,
    MIN_CONNECTIONS,
    OPEN_LOOP_HEADROOM_S,
    TIMEOUT_S,
    Judgement,
    LoadReport,
)
from bench.capacity.pairing import TARGET, Pairing
from bench.capacity.servermetrics import GroupLatency
from bench.capacity.sweep import FIRST_SHARE, FIRST_STEP, LATER_STEP, Search, Sweep
from bench.capacity.traffic import MISS_PRICE, PRODUCT_SKEW, READ_SHARES, Mix
from bench.summary import median_range, paired_ratios, verdict


@dataclass(frozen=True)
class Setting:
    """How the run was asked for, as the report states it."""

    seconds: float
    rounds: int
    workers: Sequence[int]
    threads: int
    miss_share: float
    resolution: float
    max_runs: int
    calibration_seconds: float
    pair_seconds: float
    products: int
    read_products: int
    paired_products: int
    stores: int
    searches: int
    buyers: int
    cores: int
    """The machine's cores (`os.cpu_count()`): what the CPU ceiling divides."""


def plural(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def method(setting: Setting, judgement: Judgement) -> list[str]:
    shares = ", ".join(f"{route} {share:.0%}" for route, share in READ_SHARES.items())
    return [
        "## How it was measured",
        "",
        f"- **System**: `edgemart serve --workers N` for N in "
        f"{', '.join(map(str, setting.workers))}, all started at the beginning and running "
        "throughout (the idle one costs a heartbeat), on a catalog of "
        f"{setting.products:,} products in its own database (kept between runs), PostgreSQL "
        "and a private Redis on the same machine, wrk on loopback, nothing pinned. Rate limits "
        "off; access log sampled at 1% (production's rate); every leader-only scheduled job "
        "recorded as just run and its interval set to a day, so none runs during the "
        "measurements (checked below).",
        f"- **Traffic** (issue #26): reads are {shares}; search over {setting.searches} fixed "
        "queries (a material and a kind of product, or the kind alone, with a sort), of which "
        f"**{setting.miss_share:.0%} miss every cache** (`--search-miss-share`: they add a "
        f"`max_price` in {MISS_PRICE[0]:,}–{MISS_PRICE[1]:,} cents, above every price, so the "
        "search does a real search's work under a key no request had); product detail over "
        f"{setting.read_products:,} products, skewed (the k-th most viewed has a share "
        f"∝ 1/k^{PRODUCT_SKEW}); store pages over {setting.stores} stores. Purchases: "
        f"`POST /purchases` by one of {setting.buyers} buyers (HS256 bearer tokens signed "
        "with the server's `JWT_SECRET`), one unit of one of the same "
        f"{setting.read_products:,} products drawn evenly, an Idempotency-Key never used "
        "before. Every request accepts gzip. Mixes: reads only, purchases only, and 4 reads "
        ": 1 purchase (a request is a purchase with probability 0.2).",
        "- **Money and stock**: before the run every purchase product's stock is set to 10 "
        "million units and before each round every buyer's wallet to 10^10 dollars, so no "
        "purchase can be refused (any non-2xx counts as an error); every run with purchases "
        "starts from vacuumed `products` and `wallets` (the server's autovacuum may be off).",
        "- **Offered load** (open loop, emulated): wrk has only closed loops, so the "
        "generated Lua script's `delay()` hands each request, when its connection comes free, "
        "the next slot of a fixed schedule (the offered rate from the first request) and "
        f"holds it until then; wrk has {setting.threads} thread(s) and "
        f"rate × {OPEN_LOOP_HEADROOM_S:g} s connections ({MIN_CONNECTIONS}–{MAX_CONNECTIONS}), "
        "so the schedule and not the server sets the rate. A rate **holds** when wrk reached "
        f"≥ {judgement.achieved_share:.0%} of it, p99 ≤ {judgement.p99_ms:g} ms and **zero "
        "errors**: socket errors, wrk timeouts "
        f"({TIMEOUT_S} s), and any response outside 2xx (the script counts every status in "
        "`response()` and prints them from `done()`).",
        f"- **Search**: each mix on each server, {setting.seconds:g} s per offered rate. "
        f"Round 1 first runs the issue's closed loop ({setting.calibration_seconds:g} s; its "
        f"figure is in the table) and starts at {FIRST_SHARE:.0%} of its rate, stepping "
        f"×{FIRST_STEP:g} up after a hold or down after a failure until one rate holds and "
        "one fails; later rounds start at the capacity found so far (median) and step "
        f"×{LATER_STEP:g}. Then bisection (geometric) until the failing rate is within "
        f"{setting.resolution:.0%} of the holding one, at most {setting.max_runs} runs per "
        "search. *Capacity* is the highest rate that held. Within a round the servers are "
        "searched back to back on each mix, their order alternating between rounds; "
        "medians and ranges are over the rounds, ratios are each round's.",
        "- **Coordinated omission** (the caveat of this method): wrk's latency starts when "
        "a request is sent, not when its slot came. While every connection is busy, requests "
        "leave late, and a stall of the server delays the requests that would have arrived "
        "during it instead of making them wait in its queue, so the p99 understates what "
        "clients arriving at the offered rate would see. The connections' headroom keeps "
        "this small below capacity; the script records how late each request left (*late "
        "p99*): a late p99 near 0 means the p99 is the clients' p99, a large one that it is "
        "an underestimate (such runs are beyond the capacity anyway).",
    ]


def reasons(searches: Sequence[Search], judgement: Judgement) -> str:
    """Why the lowest failing rate of each round failed, counted over the rounds."""
    counted: Counter[str] = Counter()
    for search in searches:
        failed = search.run_at(search.rates.failed)
        if failed is None:
            counted["no failure found"] += 1
            continue
        if failed.errors:
            counted["errors"] += 1
        if failed.p99_ms > judgement.p99_ms:
            counted["p99"] += 1
        if failed.achieved < judgement.achieved_share * failed.offered:
            counted["rate not reached"] += 1
    return ", ".join(f"{reason} {count}/{len(searches)}" for reason, count in counted.items())


def at_capacity(searches: Sequence[Search]) -> list[LoadReport]:
    found = (search.run_at(search.rates.held) for search in searches)
    return [run for run in found if run is not None]


def capacity_section(found: Sweep, mixes: Sequence[Mix], setting: Setting) -> list[str]:
    judgement = found.judgement
    lines = [
        "## 1. Capacity: the highest offered rate held",
        "",
        f"Median (range) over {setting.rounds} round(s). *At capacity*: the run at the rate "
        "that held, each round's, median (range). *Above it*: why the lowest failing rate "
        "failed, in how many rounds. *Closed loop*: the first round's run at the issue's "
        "connections (wrk's own loop: the requests/s the server answers that many clients "
        "sending back to back), for comparison with the issue's figures.",
        "",
        "| mix | workers | capacity, requests/s | at capacity: p50 / p99 ms | late p99 ms | "
        "above it | closed loop: c, requests/s, p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for mix in mixes:
        for count in setting.workers:
            searches = found.of(mix, count)
            runs = at_capacity(searches)
            closed = found.closed_loop[mix.name, count]
            lines.append(
                f"| {mix.label} | {count} | "
                f"**{median_range(found.capacities(mix, count))}** | "
                + (
                    f"{median_range([run.p50_ms for run in runs], '{:.1f}')} / "
                    f"{median_range([run.p99_ms for run in runs], '{:.1f}')} | "
                    f"{median_range([run.late_percentile_ms(0.99) for run in runs], '{:.0f}')} | "
                    if runs
                    else "— | — | "
                )
                + f"{reasons(searches, judgement)} | c={mix.closed_loop_connections}: "
                f"{closed.achieved:,.0f}, {closed.p50_ms:.1f} / {closed.p99_ms:.1f} |"
            )
    lines += [
        "",
        *ratio_lines(found, mixes, setting),
        "",
        *cpu_table(found, mixes, setting),
        "",
        *ceiling_table(found, mixes, setting),
        "",
        *slow_table(found, mixes, setting),
    ]
    return lines


def ratio_lines(found: Sweep, mixes: Sequence[Mix], setting: Setting) -> list[str]:
    lines = []
    workers = list(setting.workers)
    if len(workers) >= 2 and min(workers) == 1:
        most = max(workers)
        cells = []
        for mix in mixes:
            one = found.capacities(mix, 1)
            many = found.capacities(mix, most)
            if all(one):
                cells.append(f"{mix.label} {median_range(paired_ratios(many, one), '{:.2f}×')}")
        lines.append(
            f"Capacity of {most} workers over 1 (each round's ratio, median (range)): "
            + "; ".join(cells)
            + "."
        )
    for mix in mixes:
        if mix.target is None:
            continue
        for count in workers:
            shares = sorted(capacity / mix.target for capacity in found.capacities(mix, count))
            lines += [
                "",
                f"Target, {mix.label}: {mix.target:,.0f} requests/s at p99 ≤ "
                f"{found.judgement.p99_ms:g} ms, load generator on the same cores. "
                f"{plural(count)}: **{median_range(found.capacities(mix, count))} requests/s, "
                f"{median_range(shares, '{:.0%}')} of the target**: {verdict(shares, 1.0)}.",
            ]
    return lines


def cpu_table(found: Sweep, mixes: Sequence[Mix], setting: Setting) -> list[str]:
    lines = [
        "Where the CPU went at capacity (cores: CPU-seconds per second of the run, median "
        "(range) over the rounds' runs at capacity). *PostgreSQL*: the backends of this "
        "database and the cluster's background processes (WAL writer, checkpointer). *rest*: "
        "everything else the machine ran (other users, other databases, the idle server). "
        "*requests per server CPU-s*: the server's processes only.",
        "",
        "| mix | workers | server | by process | PostgreSQL | wrk | Redis | rest | "
        "machine (all) | requests per server CPU-s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(runs: Sequence[LoadReport]) -> list[str]:
        roles = sorted({role for run in runs for role in run.cpu.server})
        by_process = ", ".join(
            f"{role} {statistics.median(run.cpu.server.get(role, 0.0) for run in runs):.2f}"
            for role in roles
        )
        postgres = [run.cpu.postgres for run in runs if run.cpu.postgres is not None]
        return [
            median_range([run.cpu.server_total for run in runs], "{:.2f}"),
            by_process,
            median_range(postgres, "{:.2f}") if postgres else "—",
            median_range([run.cpu.load_generator for run in runs], "{:.2f}"),
            median_range([run.cpu.redis for run in runs], "{:.2f}"),
            median_range([run.cpu.rest for run in runs], "{:.2f}"),
            median_range([run.cpu.machine for run in runs], "{:.2f}"),
            median_range([run.achieved / run.cpu.server_total for run in runs]),
        ]

    return lines + rows_at_capacity(found, mixes, setting, 8, cells)


def rows_at_capacity(
    found: Sweep,
    mixes: Sequence[Mix],
    setting: Setting,
    width: int,
    cells: Callable[[Sequence[LoadReport]], list[str]],
) -> list[str]:
    """A table row per mix and worker count: its `width` cells made from the runs at
    capacity, or dashes when no rate held."""
    rows = []
    for mix in mixes:
        for count in setting.workers:
            runs = at_capacity(found.of(mix, count))
            row = cells(runs) if runs else ["—"] * width
            rows.append(f"| {mix.label} | {count} | {' | '.join(row)} |")
    return rows


def cpu_ms_per_request(run: LoadReport) -> dict[str, float]:
    """CPU-milliseconds each part of the system spent per request answered in `run`: the
    server's processes, PostgreSQL, the load generator and Redis (not the rest of the
    machine, which is not the system's)."""
    cpu = run.cpu
    parts = {
        "server": cpu.server_total,
        "PostgreSQL": cpu.postgres or 0.0,
        "wrk": cpu.load_generator,
        "Redis": cpu.redis,
    }
    return {part: 1000 * cores / run.achieved for part, cores in parts.items()}


def ceiling(run: LoadReport, cores: int) -> float:
    """The request rate at which the system's parts would keep all `cores` busy at the cost
    per request measured in `run`: no rate beyond it can hold on this machine, and a p99
    bound needs headroom below it."""
    return cores * 1000 / sum(cpu_ms_per_request(run).values())


def ceiling_table(found: Sweep, mixes: Sequence[Mix], setting: Setting) -> list[str]:
    """What a request costs in CPU at capacity, and the ceiling that cost puts on the rate."""
    parts = ("server", "PostgreSQL", "wrk", "Redis")
    lines = [
        "CPU per request at capacity (CPU-ms per request answered, median (range) over the "
        "runs at capacity) and the **CPU ceiling** it implies: the rate at which the server, "
        f"PostgreSQL, wrk and Redis together would keep all {setting.cores} cores busy at that "
        "cost. No rate above the ceiling can hold here whatever the latency bound; the p99 "
        "bound is met some way below it.",
        "",
        "| mix | workers | " + " | ".join(parts) + " | all | CPU ceiling, requests/s |",
        "|---|---:|" + "---:|" * (len(parts) + 2),
    ]

    def cells(runs: Sequence[LoadReport]) -> list[str]:
        costs = [cpu_ms_per_request(run) for run in runs]
        return [
            *(median_range([cost[part] for cost in costs], "{:.2f}") for part in parts),
            median_range([sum(cost.values()) for cost in costs], "{:.2f}"),
            median_range([ceiling(run, setting.cores) for run in runs]),
        ]

    return lines + rows_at_capacity(found, mixes, setting, len(parts) + 2, cells)


def pairing_section(cells: Sequence[Pairing], setting: Setting) -> list[str]:
    lines = [
        "## 2. Purchases through HTTP vs `purchase()` called directly",
        "",
        f"Over {setting.paired_products:,} products of the same database, at the same number "
        "of clients: purchases through `edgemart serve` (wrk, closed loop, one connection per "
        f"client, buyers drawn from {setting.buyers}) and `purchase()` called by "
        "bench.purchase's Python driver (each client its own connection and buyer, the SQL "
        f"the purchase route runs), {setting.pair_seconds:g} s each, alternating (order "
        f"rotating) in {setting.rounds} paired round(s); every run starts from vacuumed "
        "products and wallets. Purchases/s median (range); p50 / p99 ms median of the "
        "runs'. *server CPU*: the server's processes (cores); *driver CPU*: the Python "
        "driver's own.",
        "",
        "| clients | path | purchases/s | p50 / p99 ms | errors | CPU | HTTP / direct "
        f"(target ≥ {TARGET:.0%}) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        direct = [run.per_second for run in cell.direct]
        for count, runs in cell.http.items():
            ratios = paired_ratios([run.achieved for run in runs], direct)
            lines.append(
                f"| {cell.clients} | HTTP, {plural(count)} | "
                f"{median_range([run.achieved for run in runs])} | "
                f"{statistics.median(run.p50_ms for run in runs):.1f} / "
                f"{statistics.median(run.p99_ms for run in runs):.1f} | "
                f"{sum(run.errors for run in runs):,} | server "
                f"{median_range([run.cpu.server_total for run in runs], '{:.2f}')} | "
                f"**{median_range(ratios, '{:.1%}')}** {verdict(ratios, TARGET)} |"
            )
        lines.append(
            f"| {cell.clients} | direct `purchase()` | {median_range(direct)} | "
            f"{statistics.median(run.p50_ms for run in cell.direct):.1f} / "
            f"{statistics.median(run.p99_ms for run in cell.direct):.1f} | 0 | driver "
            f"{median_range([run.client_cores for run in cell.direct], '{:.2f}')} | — |"
        )
    return lines


def integrity_section(
    conservation: Conservation, answered_201: int, direct_purchases: int, jobs: Sequence[str]
) -> list[str]:
    oversold = "none" if conservation.holds else "**FAILED**"
    return [
        "## Integrity after the run",
        "",
        f"- Oversold: {oversold}. Products with stock below zero: "
        f"{conservation.negative_stock}; products whose stock + sold count changed: "
        f"{conservation.products_changed}; units sold {conservation.units_sold:,}, units in "
        f"the {conservation.orders:,} orders completed during the run "
        f"{conservation.units_ordered:,}.",
        f"- Purchases answered 201 to wrk: {answered_201:,}; made by the direct driver: "
        f"{direct_purchases:,} (orders beyond their sum are purchases still in flight when wrk "
        "stopped, which it does not count).",
        "- Scheduled jobs started during the run: " + (", ".join(jobs) if jobs else "none") + ".",
    ]


def runs_appendix(found: Sweep, mixes: Sequence[Mix]) -> list[str]:
    labels = {mix.name: mix.label for mix in mixes}
    lines = [
        "<details><summary>Every run of part 1 (the closed loops first)</summary>",
        "",
        "| round | mix | workers | offered/s | reached/s | connections | p50 ms | p99 ms | "
        "late p99 ms | statuses; socket errors | server CPU | PostgreSQL CPU | rest | held? |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    rows = [(1, labels[name], workers, run) for (name, workers), run in found.closed_loop.items()]
    rows += [
        (search.round + 1, search.mix.label, search.workers, run)
        for search in found.searches
        for run in search.runs
    ]
    for number, label, workers, run in rows:
        postgres = "—" if run.cpu.postgres is None else f"{run.cpu.postgres:.2f}"
        offered = f"{run.offered:,.0f}" if run.offered else f"closed loop, c={run.connections}"
        outcome = found.judgement.why_not(run) if run.offered else "—"
        lines.append(
            f"| {number} | {label} | {workers} | {offered} | {run.achieved:,.0f} | "
            f"{run.connections} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | "
            f"{run.late_percentile_ms(0.99):.0f} | {run.status_summary()} | "
            f"{run.cpu.server_total:.2f} | {postgres} | {run.cpu.rest:.2f} | {outcome} |"
        )
    return [*lines, "", "</details>"]


def summary_section(
    found: Sweep | None,
    cells: Sequence[Pairing],
    conservation: Conservation,
    jobs: Sequence[str],
    mixes: Sequence[Mix],
    setting: Setting,
) -> list[str]:
    """The run's answers in a few lines; the sections below give the how and the detail."""
    lines = ["## Summary", ""]
    if found is not None:
        for mix in mixes:
            capacities = "; ".join(
                f"{plural(count)} {median_range(found.capacities(mix, count))}"
                for count in setting.workers
            )
            lines.append(f"- **{mix.label}**: capacity {capacities} requests/s.")
            if mix.target is not None:
                best = max(
                    setting.workers,
                    key=lambda count: statistics.median(found.capacities(mix, count)),
                )
                shares = sorted(c / mix.target for c in found.capacities(mix, best))
                lines.append(
                    f"- **Target {mix.target:,.0f} requests/s ({mix.label})**: "
                    f"{median_range(shares, '{:.0%}')} of it with {plural(best)}: "
                    f"{verdict(shares, 1.0)}."
                )
                runs = at_capacity(found.of(mix, best))
                if runs:
                    ceilings = [ceiling(run, setting.cores) for run in runs]
                    lines.append(
                        f"- **CPU ceiling ({mix.label}, {plural(best)})**: at the cost per "
                        f"request measured at capacity, {setting.cores} cores carry at most "
                        f"{median_range(ceilings)} requests/s, "
                        f"{median_range(sorted(c / mix.target for c in ceilings), '{:.0%}')} "
                        "of the target (see the CPU per request table)."
                    )
        rest = [run.cpu.rest for search in found.searches for run in search.runs]
        lines.append(
            f"- The rest of the machine (other users) took {median_range(rest, '{:.2f}')} "
            "cores during the paced runs (median (range))."
        )
    for cell in cells:
        direct = [run.per_second for run in cell.direct]
        ratios = "; ".join(
            f"{plural(count)} "
            f"{median_range(paired_ratios([run.achieved for run in runs], direct), '{:.1%}')} "
            f"{verdict(paired_ratios([run.achieved for run in runs], direct), TARGET)}"
            for count, runs in cell.http.items()
        )
        lines.append(
            f"- **Purchases through HTTP / `purchase()` direct, {cell.clients} clients** "
            f"(target ≥ {TARGET:.0%}): {ratios}."
        )
    oversold = "none" if conservation.holds else "**FAILED** (see below)"
    lines.append(
        f"- Oversold: {oversold}; scheduled jobs during the run: "
        f"{', '.join(jobs) if jobs else 'none'}."
    )
    return lines


SLOW_MS = 100.0
"""A bucket bound of the server's latency histogram (edgemart.metrics.LATENCY_BUCKETS_MS)."""


def combined(runs: Sequence[LoadReport]) -> dict[str, GroupLatency]:
    """The server's latency per route group over several runs together."""
    groups: dict[str, GroupLatency] = {}
    for run in runs:
        for group, latency in run.server_latency.items():
            earlier = groups.get(group)
            if earlier is None:
                groups[group] = latency
                continue
            bounds = set(earlier.at_most) | set(latency.at_most)
            groups[group] = GroupLatency(
                earlier.count + latency.count,
                earlier.sum_ms + latency.sum_ms,
                {b: earlier.at_most.get(b, 0) + latency.at_most.get(b, 0) for b in bounds},
            )
    return groups


def slow_cell(runs: Sequence[LoadReport]) -> str:
    """`search 1.2% (14.0), store 0.0% (0.9)`: per route group, the share of its requests
    over `SLOW_MS` in the app and their mean ms, busiest group first."""
    groups = combined(runs)
    if not groups:
        return "—"
    ordered = sorted(groups.items(), key=lambda item: -item[1].count)
    return ", ".join(
        f"{group} {latency.share_over(SLOW_MS):.1%} ({latency.mean_ms:.1f})"
        for group, latency in ordered
    )


def slow_table(found: Sweep, mixes: Sequence[Mix], setting: Setting) -> list[str]:
    lines = [
        f"Where the slow requests were, by the server's own `request_latency` (from a "
        "request's arrival in the app to its response's end; time spent waiting for the event "
        "loop or a CPU before that is not in it, but is in wrk's): per route group (`store` "
        f"holds product and store pages), the share of its requests over {SLOW_MS:g} ms and "
        "(in brackets) their mean in ms, over the runs at capacity and over the lowest "
        "failing rates, every round together. A p99 over the limit with few slow requests "
        "in the app points at queueing before the app (CPU, event loop).",
        "",
        f"| mix | workers | at capacity: over {SLOW_MS:g} ms in the app (mean ms) | "
        f"lowest failing rate: over {SLOW_MS:g} ms in the app (mean ms) |",
        "|---|---:|---|---|",
    ]
    for mix in mixes:
        for count in setting.workers:
            searches = found.of(mix, count)
            failing = [search.run_at(search.rates.failed) for search in searches]
            lines.append(
                f"| {mix.label} | {count} | {slow_cell(at_capacity(searches))} | "
                f"{slow_cell([run for run in failing if run is not None])} |"
            )
    return lines

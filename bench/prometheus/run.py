"""What recording one metric costs on the request path, and what sharing it between
`edgemart serve` workers costs: edgemart's in-memory add vs prometheus_client, in one process
and in its multiprocess (mmap file) mode; and one worker's snapshot write.

    python -m bench.prometheus.run [--rounds N] [--out bench/prometheus/RESULTS.md]

Each contender runs in a fresh interpreter (the multiprocess mode must be chosen before
prometheus_client is imported), rounds interleaved; a figure is the median over rounds of the
best of five timeit repeats, in µs per call. The snapshot is `registry_totals` + JSON + an
atomic file replace of a registry holding `--series` series.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import provenance, publish

CALLS = 200_000

EDGEMART = """
from edgemart import metrics
from edgemart.metrics import REQUESTS, REQUEST_LATENCY
bound = metrics.series(REQUESTS, route_group="search", status_class="2xx")
bound_latency = metrics.series(REQUEST_LATENCY, route_group="search")
cases = {
    "record(REQUESTS, route_group=..., status_class=...)": lambda: metrics.record(
        REQUESTS, route_group="search", status_class="2xx"),
    "counter, bound series: add()": bound.add,
    "distribution, bound series: add(12.5)": lambda: bound_latency.add(12.5),
}
"""

PROMETHEUS_CLIENT = """
from prometheus_client import Counter, Histogram
counter = Counter("requests", "r", ["route_group", "status_class"])
histogram = Histogram("latency", "l", ["route_group"])
child = counter.labels("search", "2xx")
child_histogram = histogram.labels("search")
cases = {
    "counter.labels(...).inc()": lambda: counter.labels("search", "2xx").inc(),
    "counter, bound child: inc()": child.inc,
    "histogram, bound child: observe(0.0125)": lambda: child_histogram.observe(0.0125),
}
"""

SNAPSHOT = """
from edgemart.metrics import MetricTable, Registry
from gateway.workermetrics import MetricsFolder, registry_totals
table = MetricTable()
counter = table.counter("c", "c", dimensions=("a",))
latency = table.distribution("d", "d", unit="Milliseconds", buckets=(5.0, 10.0, 50.0, 100.0,
    250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0), dimensions=("a",))
registry = Registry()
for i in range(SERIES // 2):
    registry.record(counter, i, a=f"v{i}")
    registry.record(latency, float(i), a=f"v{i}")
from pathlib import Path
folder = MetricsFolder(Path(FOLDER))
def snapshot():
    folder._last_written = None  # force the write, as when something changed
    folder.write(registry_totals(registry))
cases = {f"worker snapshot of {SERIES} series (totals, JSON, file replace)": snapshot}
"""

MEASURE = """
import json, sys, timeit
calls = int(sys.argv[1])
results = {}
for name, case in cases.items():
    number = calls if "snapshot" not in name else max(calls // 1000, 50)
    best = min(timeit.repeat(case, number=number, repeat=5)) / number
    results[name] = best * 1e6
print(json.dumps(results))
"""


def measure(setup: str, env: dict[str, str], calls: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", setup + MEASURE, str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, float] = json.loads(result.stdout)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        contenders = {
            "edgemart (in-memory add)": (EDGEMART, base),
            "prometheus_client, one process": (PROMETHEUS_CLIENT, base),
            "prometheus_client, multiprocess (mmap)": (
                PROMETHEUS_CLIENT,
                {**base, "PROMETHEUS_MULTIPROC_DIR": scratch},
            ),
            "edgemart serve worker": (
                f"SERIES = {args.series}\nFOLDER = {str(Path(scratch) / 'snap')!r}\n" + SNAPSHOT,
                base,
            ),
        }
        for round_number in range(args.rounds):
            for contender, (setup, env) in contenders.items():
                for case, micros in measure(setup, env, CALLS).items():
                    samples.setdefault((contender, case), []).append(micros)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    lines = [
        "# Recording a metric, and sharing it between serve's workers",
        "",
        *provenance(f"python -m bench.prometheus.run {' '.join(sys.argv[1:])}".strip()),
        "",
        f"µs per call: median over {args.rounds} rounds of the best of 5 timeit repeats "
        f"({CALLS:,} calls each; snapshots {max(CALLS // 1000, 50)}).",
        "",
        "| contender | call | µs per call (median) | range |",
        "|---|---|---:|---:|",
    ]
    for (contender, case), values in samples.items():
        lines.append(
            f"| {contender} | `{case}` | {statistics.median(values):.3f} | "
            f"{min(values):.3f}-{max(values):.3f} |"
        )
    publish(args.out, lines)


if __name__ == "__main__":
    main()

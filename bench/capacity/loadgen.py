"""One wrk run of a traffic script against a server, and what it measured: the rate reached,
latency percentiles, every status, socket errors, how late paced requests left, and the CPU
each part of the machine used meanwhile."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.capacity.servermetrics import GroupLatency
from bench.serving import CpuUse, PostgresProcesses, Server, measure_cpu

OPEN_LOOP_HEADROOM_S = 0.2
"""A paced run opens rate × this many connections: every request could take this long
before the pacing runs out of free connections (p99 is held to 100 ms)."""
MIN_CONNECTIONS = 32
MAX_CONNECTIONS = 1_500
TIMEOUT_S = 5
"""wrk's per-request timeout (a timed-out request counts as an error)."""
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def open_loop_connections(rate: float) -> int:
    """rate × `OPEN_LOOP_HEADROOM_S`, within `MIN_CONNECTIONS`–`MAX_CONNECTIONS`; below
    `MIN_CONNECTIONS` requests/s one per request/s, so each connection still sends every
    second at least (the server closes a connection idle for 5 s, which wrk counts as a read
    error)."""
    floor = min(MIN_CONNECTIONS, math.ceil(rate))
    return max(floor, min(MAX_CONNECTIONS, math.ceil(rate * OPEN_LOOP_HEADROOM_S)))


@dataclass(frozen=True)
class LoadReport:
    """What one wrk run measured (from the script's `done()` lines)."""

    offered: float
    """Requests/s the pacing offered; 0 for a closed loop."""
    connections: int
    requests: int
    seconds: float
    latency_ms: Mapping[str, float]
    """wrk's latency percentiles (`p50`, `p90`, `p99`, `p99.9`, `max`): from the moment a
    request was sent."""
    socket_errors: Mapping[str, int]
    statuses: Mapping[int, int]
    late_ms: Mapping[int, int]
    """Paced requests by how many whole milliseconds after their slot they left."""
    cpu: CpuUse
    server_latency: Mapping[str, GroupLatency] = field(default_factory=dict)
    """The app's own latency per route group over the run (servermetrics)."""

    @property
    def achieved(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        """Socket errors and timeouts, and every response outside 2xx."""
        refused = sum(count for status, count in self.statuses.items() if not 200 <= status < 300)
        return sum(self.socket_errors.values()) + refused

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["p50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["p99"]

    def late_percentile_ms(self, share: float) -> float:
        """The lateness (ms, whole) that `share` of the paced requests stayed within."""
        total = sum(self.late_ms.values())
        if not total:
            return 0.0
        seen = 0
        for bucket in sorted(self.late_ms):
            seen += self.late_ms[bucket]
            if seen >= share * total:
                return float(bucket)
        return float(max(self.late_ms))

    def status_summary(self) -> str:
        """`200: 9,990, 503: 10; 2 timeout` (statuses, then socket errors)."""
        text = ", ".join(f"{status}: {count:,}" for status, count in sorted(self.statuses.items()))
        socket = ", ".join(
            f"{count:,} {kind}" for kind, count in self.socket_errors.items() if count
        )
        return text + (f"; {socket}" if socket else "")


@dataclass(frozen=True)
class Judgement:
    """When an offered rate counts as held."""

    p99_ms: float = 100.0
    achieved_share: float = 0.97

    def held(self, report: LoadReport) -> bool:
        return (
            report.errors == 0
            and report.p99_ms <= self.p99_ms
            and report.achieved >= self.achieved_share * report.offered
        )

    def why_not(self, report: LoadReport) -> str:
        """What failed, `held` when nothing did."""
        reasons = []
        if report.errors:
            reasons.append(f"{report.errors:,} errors")
        if report.p99_ms > self.p99_ms:
            reasons.append(f"p99 {report.p99_ms:,.0f} ms")
        if report.achieved < self.achieved_share * report.offered:
            reasons.append(f"reached {report.achieved / report.offered:.0%}")
        return ", ".join(reasons) or "held"


def parse_report(text: str) -> dict[str, float]:
    """The `capacity <name> <value>` lines of the script's `done()`."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "capacity":
            found[parts[1]] = float(parts[2])
    if "requests" not in found or "duration_us" not in found:
        raise RuntimeError(f"no report in wrk's output:\n{text}")
    return found


def load_report(
    figures: Mapping[str, float], offered: float, connections: int, cpu: CpuUse
) -> LoadReport:
    def prefixed(prefix: str) -> dict[int, int]:
        return {
            int(name.removeprefix(prefix)): int(value)
            for name, value in figures.items()
            if name.startswith(prefix)
        }

    return LoadReport(
        offered=offered,
        connections=connections,
        requests=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        latency_ms={
            name: figures[f"latency_us_{name}"] / 1000
            for name in ("p50", "p90", "p99", "p99.9", "max")
        },
        socket_errors={kind: int(figures[f"error_{kind}"]) for kind in SOCKET_ERRORS},
        statuses=prefixed("status_"),
        late_ms=prefixed("late_ms_"),
        cpu=cpu,
    )


def run_wrk(
    server: Server,
    script: Path,
    *,
    seconds: float,
    connections: int,
    threads: int,
    offered: float,
    redis_pid: int,
    postgres: PostgresProcesses | None,
) -> LoadReport:
    """wrk with `script` against `server` for `seconds`; `offered` is the script's pacing
    (0: a closed loop of `connections`)."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={TIMEOUT_S}s",
        "-s",
        str(script),
        server.url,
    ]

    def run() -> str:
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f"wrk failed ({finished.returncode}):\n{finished.stderr}")
        return finished.stdout

    output, cpu = measure_cpu(run, server, redis_pid, postgres)
    return load_report(parse_report(output), offered, connections, cpu)


def warm(server: Server, script: Path, *, seconds: float, connections: int) -> None:
    """A closed-loop wrk run of `script` whose figures are not kept; any error stops the
    benchmark (nothing should fail before the load is heavy)."""
    finished = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script)]
        + [server.url],
        capture_output=True,
        text=True,
    )
    if finished.returncode != 0 or "Non-2xx" in finished.stdout or "errors" in finished.stdout:
        raise RuntimeError(f"warming {server.url} failed:\n{finished.stdout}{finished.stderr}")

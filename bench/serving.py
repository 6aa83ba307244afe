"""`edgemart serve` under a benchmark: a private Redis, the server started and stopped, its
processes by role, and the CPU each part of the machine used while a load ran (the server's
processes, the load generator, Redis, PostgreSQL and the rest)."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg

from bench.ratelimit.gateway import cpu_seconds, free_port

T = TypeVar("T")

QUIET_SCHEDULES = "refresh_views=86400,score_listings=86400,maintenance=86400"
"""Every leader-only scheduled job a day apart: none runs during a measurement."""


# ---- Processes ----


def children(pid: int) -> list[int]:
    """Every live descendant of `pid`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append(child)
                frontier.append(child)
    return sorted(found)


def cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy so far, every core summed."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for(ready: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout_s:.0f} s")
        time.sleep(0.1)


# ---- The private Redis ----


@contextmanager
def private_redis(folder: Path) -> Iterator[tuple[str, int]]:
    """A Redis of this run's own on loopback, without persistence: (its URL, its pid). The
    buffered counters' keys carry no namespace, so a shared Redis would mix this run's counts
    with everyone else's."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _redis_answers(port), "Redis")
        yield f"redis://127.0.0.1:{port}/0", server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def _redis_answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# ---- The server ----


@dataclass
class Server:
    """One `edgemart serve --workers N` of this run."""

    workers: int
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]


def start_server(
    workers: int,
    database_url: str,
    redis_url: str,
    folder: Path,
    environment: Mapping[str, str],
) -> Server:
    """`edgemart serve --workers N --no-demo` on loopback, answering: the benchmark's
    `environment` (rate limits, secrets, the shared-cache namespace) over this one's, with
    production's 1% access-log sampling (`serve` would log every request) and the scheduled
    jobs pushed a day apart (`QUIET_SCHEDULES`)."""
    port = free_port()
    variables = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ACCESS_LOG_SAMPLE_RATE": "0.01",
        "SCHEDULE_INTERVALS": QUIET_SCHEDULES,
        "EDGEMART_DATA_DIR": str(folder / f"data-{workers}"),
        **environment,
    }
    log = (folder / f"serve-{workers}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--no-demo"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(workers, port, process)

    def answering() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"serve --workers {workers} exited; see {log.name}")
        try:
            with urllib.request.urlopen(server.url + "/marketplace/home", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_for(answering, f"serve --workers {workers}", timeout_s=120)
    # With several workers the supervisor answers nothing itself: wait for every worker.
    wanted = workers + 1 if workers > 1 else 1
    wait_for(lambda: len(server.processes()) >= wanted, f"{workers} workers", timeout_s=120)
    return server


def stop_server(server: Server) -> None:
    pids = server.processes()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in pids:  # only this run's own processes
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.process.wait(timeout=30)


def roles(server: Server, pids: Sequence[int]) -> list[tuple[str, int]]:
    """The server's processes by what they do: `serve` (with one worker, the one serving;
    with several, their supervisor), `worker N`, and `tracker` (multiprocessing's resource
    tracker)."""
    named, workers = [], 0
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            command = b""
        if pid == server.process.pid:
            named.append(("serve", pid))
        elif b"resource_tracker" in command:
            named.append(("tracker", pid))
        else:
            workers += 1
            named.append((f"worker {workers}", pid))
    return named


def duration_ms(text: str) -> float:
    """wrk's `1.23ms`, `850.00us`, `2.01s` in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


# ---- PostgreSQL's processes ----

_CLIENT_ADDRESS = re.compile(r"^(\[local\]|\S+\(\d+\))$")


@dataclass(frozen=True)
class PostgresProcesses:
    """One database's share of a PostgreSQL on this machine: the backends connected to it and
    the cluster's background processes (WAL writer, checkpointer, ...; shared with the other
    databases, but during a measurement mostly writing this run's changes). Backends of other
    databases are left to the rest of the machine."""

    postmaster: int
    database: str

    @classmethod
    def of(cls, url: str) -> PostgresProcesses | None:
        """The server `url` names, when it runs on this machine (its processes are in
        /proc), else None."""
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_backend_pid(), current_database()").fetchone()
        if row is None:
            return None
        try:
            stat = Path(f"/proc/{row[0]}/stat").read_text()
            command = Path(f"/proc/{row[0]}/cmdline").read_bytes()
        except OSError:
            return None
        if b"postgres" not in command:
            return None
        return cls(int(stat.rsplit(")", 1)[1].split()[1]), str(row[1]))

    def cpu(self) -> dict[int, float]:
        """CPU seconds so far of each of the processes counted as this database's."""
        counted = {self.postmaster: cpu_or_zero(self.postmaster)}
        for pid in children(self.postmaster):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if self._counted(title):
                counted[pid] = cpu_or_zero(pid)
        return counted

    def _counted(self, title: str) -> bool:
        """A backend's title is `postgres: [cluster: ]user database address state`."""
        words = title.split()
        for index, word in enumerate(words):
            if _CLIENT_ADDRESS.match(word):
                return index > 0 and words[index - 1] == self.database
        return True  # a background process


# ---- CPU over a measured span ----


@dataclass(frozen=True)
class CpuUse:
    """Cores (CPU-seconds per second) each part of the machine used over a measured span."""

    seconds: float
    server: dict[str, float]
    """Each of the server's processes, by role (`serve`, `worker 1`, ...)."""
    load_generator: float
    """This process's children that ended during the span (the load generator)."""
    redis: float
    postgres: float | None
    """`PostgresProcesses`' share, None when PostgreSQL is not on this machine."""
    rest: float
    """The rest of the machine: other users, other databases' backends, the idle server."""

    @property
    def server_total(self) -> float:
        return sum(self.server.values())

    @property
    def machine(self) -> float:
        """The whole machine: every part above."""
        parts = self.server_total + self.load_generator + self.redis + (self.postgres or 0.0)
        return parts + self.rest


def measure_cpu(
    action: Callable[[], T],
    server: Server,
    redis_pid: int,
    postgres: PostgresProcesses | None = None,
) -> tuple[T, CpuUse]:
    """Run `action` (which starts the load generator as a child and waits for it) and say
    what the machine's CPU went to meanwhile."""
    pids = server.processes()
    server_before = {pid: cpu_or_zero(pid) for pid in pids}
    redis_before = cpu_or_zero(redis_pid)
    postgres_before = postgres.cpu() if postgres else {}
    busy_before = machine_busy()
    children_before = _children_cpu()
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    load_generator = (_children_cpu() - children_before) / elapsed
    busy = (machine_busy() - busy_before) / elapsed
    server_cpu = {
        role: (cpu_or_zero(pid) - server_before[pid]) / elapsed for role, pid in roles(server, pids)
    }
    redis = (cpu_or_zero(redis_pid) - redis_before) / elapsed
    database = None
    if postgres is not None:
        after = postgres.cpu()
        database = sum(value - postgres_before.get(pid, 0.0) for pid, value in after.items())
        database /= elapsed
    ours = sum(server_cpu.values()) + load_generator + redis + (database or 0.0)
    use = CpuUse(elapsed, server_cpu, load_generator, redis, database, max(0.0, busy - ours))
    return result, use


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

"""A real `edgemart serve` in a subprocess: its output in a log file, its JSON lines read
back, and stopped (every process it started included) when the test is done with it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.embedded import process_is_alive
from gateway.workermetrics import totals_from_json
from tests.conftest import unused_port
from tests.support.processes import stop_process

LEADER_LINE = re.compile(r"this process leads: it holds the scheduler lease \(pid (\d+), term")
HEALTH_2XX = (("route_group", "health"), ("status_class", "2xx"))


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    temp: Path

    def records(self) -> list[dict[str, object]]:
        """The JSON log lines so far (uvicorn's and edgemart's)."""
        found = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line still being written, or not JSON
            if isinstance(record, dict) and "message" in record:
                found.append(record)
        return found

    def messages(self) -> list[str]:
        return [str(record["message"]) for record in self.records()]

    def worker_pids(self) -> list[int]:
        prefix = "Started server process ["
        return [int(m[len(prefix) : -1]) for m in self.messages() if m.startswith(prefix)]

    def leaders(self) -> list[int]:
        """The pids of the processes that became the leader, in order."""
        return [int(found[1]) for m in self.messages() if (found := LEADER_LINE.match(m))]

    def run_folders(self) -> list[Path]:
        return list(self.temp.glob("edgemart-serve-*"))

    def health_requests_by_worker(self) -> dict[str, float]:
        """Each worker's file: the health 2xx requests it had counted when it last wrote."""
        counts = {}
        for file in self.temp.glob("edgemart-serve-*/metrics/*.json"):
            totals = totals_from_json(file.read_text(encoding="utf-8"))
            counts[file.name] = sum(
                t.total for t in totals if t.metric == "requests" and t.dimensions == HEALTH_2XX
            )
        return counts

    def stop(self) -> None:
        """SIGTERM, as a process manager would (killed if it is not gone within a minute);
        then any worker it left alive is killed."""
        if self.process.poll() is None:
            stop_process(self.process, timeout_s=60)
        for pid in self.worker_pids():
            if process_is_alive(pid):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def serve_process(env: Mapping[str, str], log: Path, temp: Path, *args: str) -> Iterator[Serve]:
    """`edgemart serve *args` on a free port with environment `env` (its run folder in
    `temp`, which `env` names as TMPDIR where that matters), writing to `log`; stopped when
    the block ends."""
    port = unused_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    serve = Serve(process, f"http://127.0.0.1:{port}", log, temp)
    try:
        yield serve
    finally:
        serve.stop()


@contextmanager
def answering_serve(
    env: Mapping[str, str], log: Path, temp: Path, *args: str, deadline_s: float = 60
) -> Iterator[Serve]:
    """`serve_process` without the demo data, once it answers /health/live."""
    with serve_process(env, log, temp, "--no-demo", *args) as serve:
        wait_until(lambda: answers(serve.url), "serve answers /health/live", serve, deadline_s)
        yield serve


def answers(url: str) -> bool:
    """Whether the serve at `url` answers /health/live with 200 (not while it starts)."""
    try:
        return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def shared_cache_environment(
    database_url: str, redis_url: str, namespace: str, jwt_secret: str
) -> dict[str, str]:
    """A serve's environment on the test's database and Redis, its shared cache under
    `namespace` (which the test's other processes share), rate limits in its own memory."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SHARED_CACHE_NAMESPACE": namespace,
        "SHARED_CACHE_TIMEOUT_MS": "2000",
        "JWT_SECRET": jwt_secret,
        "RATE_LIMIT_BACKEND": "memory",
    }


def wait_until(
    condition: Callable[[], bool], what: str, serve: Serve, deadline_s: float = 60
) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if serve.process.poll() is not None:
            raise AssertionError(f"serve exited early: {serve.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        time.sleep(0.1)

"""`edgemart serve --workers 2` as a user runs it: whichever worker answers `/metrics` counts
every worker's requests, exactly; one worker runs the scheduled jobs; a worker killed outright
is replaced, its counts kept and the jobs taken over.

`serve_with_workers` and `Serve` are also what tests/integration/test_fleet_scheduler.py runs
a fleet of `serve`s with."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import process_is_alive
from gateway.workermetrics import totals_from_json
from tests.conftest import unused_port

TOKEN = "scrape-token-for-workers"
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


@contextmanager
def serve_with_workers(
    database_url: str,
    tmp_path: Path,
    workers: int,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "serve",
) -> Iterator[Serve]:
    """A real `edgemart serve --workers N` on the test database, with `env` added to its
    environment, stopped (every process it started included) when the block ends. Several
    at once need each their `name` (their own log and run folder)."""
    temp = tmp_path / f"{name}-tmp"
    temp.mkdir()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": "x" * 32,
        "METRICS_BEARER_TOKEN": TOKEN,
        "TMPDIR": str(temp),  # where serve makes its run folder
        **(env or {}),
    }
    port = unused_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)]
            + ["--workers", str(workers), "--no-demo"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    serve = Serve(process, f"http://127.0.0.1:{port}", log, temp)
    try:
        wait_until(
            lambda: serve.messages().count("Application startup complete.") == workers,
            "every worker up",
            serve,
        )
        yield serve
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in serve.worker_pids():
            if process_is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_for_files(serve: Serve, total: int) -> None:
    """Until the workers' files, together, hold `total` health requests."""
    wait_until(
        lambda: sum(serve.health_requests_by_worker().values()) == total,
        f"the workers' files hold {total} requests",
        serve,
    )


def send(url: str, count: int) -> None:
    """`count` requests, eight at a time, each on a new connection (so both workers accept)."""

    def one(_: int) -> int:
        return httpx.get(url, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def scrape(serve: Serve, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{serve.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers}
    )


def health_requests(text: str) -> tuple[float, float]:
    """(requests, latency observations) of the health group's 2xx in a scrape."""
    requests = latency = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edgemart_requests_total" and sample.labels == dict(HEALTH_2XX):
                requests = sample.value
            if sample.name == "edgemart_request_latency_seconds_count" and sample.labels == {
                "route_group": "health"
            }:
                latency = sample.value
    assert requests is not None and latency is not None, text
    return requests, latency


def test_any_worker_scrapes_every_workers_requests_exactly(
    migrated_database_url: str, tmp_path: Path
) -> None:
    with serve_with_workers(migrated_database_url, tmp_path, workers=2) as serve:
        sent = 0
        # Known traffic, in rounds of 40 until both workers have served some of it.
        for _ in range(10):
            send(f"{serve.url}/health/live", 40)
            sent += 40
            wait_for_files(serve, sent)
            if sum(1 for n in serve.health_requests_by_worker().values() if n) == 2:
                break
        assert sorted(v > 0 for v in serve.health_requests_by_worker().values()) == [True, True]

        with ThreadPoolExecutor(8) as pool:
            scrapes = list(pool.map(lambda _: scrape(serve), range(24)))
        for response in scrapes:
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            assert health_requests(response.text) == (sent, sent)

        refused = httpx.get(f"{serve.url}/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["cache-control"] == "no-store"
        assert scrape(serve, Authorization="Bearer wrong").status_code == 401
        workers = serve.worker_pids()
        run_folders = serve.run_folders()

        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
        messages = serve.messages()

    assert len(workers) == 2
    assert len(serve.leaders()) == 1 and serve.leaders()[0] in workers
    assert "gateway runs in 2 worker processes" in messages
    assert not any(process_is_alive(pid) for pid in workers)
    assert len(run_folders) == 1 and not run_folders[0].exists()


def test_a_killed_worker_is_replaced_its_counts_kept_and_the_jobs_taken_over(
    migrated_database_url: str, tmp_path: Path
) -> None:
    short_lease = {"SCHEDULER_LEASE_TTL_S": "3"}  # a standby takes over in about 3 s
    with serve_with_workers(migrated_database_url, tmp_path, workers=2, env=short_lease) as serve:
        wait_until(lambda: len(serve.leaders()) == 1, "a leader", serve)
        [leader] = serve.leaders()
        send(f"{serve.url}/health/live", 40)
        wait_for_files(serve, 40)

        os.kill(leader, signal.SIGKILL)
        wait_until(lambda: len(serve.leaders()) == 2, "another worker leads", serve)
        wait_until(
            lambda: serve.messages().count("Application startup complete.") == 3,
            "a replacement worker",
            serve,
        )
        assert health_requests(scrape(serve).text) == (40, 40)  # the dead worker's included

        send(f"{serve.url}/health/live", 10)
        wait_for_files(serve, 50)
        for _ in range(6):
            assert health_requests(scrape(serve).text) == (50, 50)

    first, second = serve.leaders()
    assert first == leader and second != leader and second in serve.worker_pids()

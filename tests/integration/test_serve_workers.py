"""`edgemart serve --workers 2` as a user runs it: whichever worker answers `/metrics` counts
every worker's requests, exactly; one worker runs the scheduled jobs; a worker killed outright
is replaced, its counts kept and the jobs taken over.

`serve_with_workers` and `Serve` are also what tests/integration/test_fleet_scheduler.py runs
a fleet of `serve`s with."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import process_is_alive
from tests.support.serve import HEALTH_2XX, Serve, serve_process, wait_until

TOKEN = "scrape-token-for-workers"


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
    with serve_process(
        environment, tmp_path / f"{name}.log", temp, "--workers", str(workers), "--no-demo"
    ) as serve:
        wait_until(
            lambda: serve.messages().count("Application startup complete.") == workers,
            "every worker up",
            serve,
        )
        yield serve


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

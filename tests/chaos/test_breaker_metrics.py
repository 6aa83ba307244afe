"""Chaos: PostgreSQL (a server this test starts) stops, the database circuit breaker opens,
the server comes back and the breaker closes, and both metric exports show each change: the
CloudWatch EMF documents a Lambda handler prints for its invocations (the search function,
invoked with API Gateway events), and `GET /metrics` of a real `edgemart serve` (parsed as
Prometheus parses it). Loopback only; about 15 s."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import functions.search.app as search_function
from edgemart import metrics
from edgemart.metrics import Metric
from edgemart.migrate import apply_migrations
from gateway.prometheus import prometheus_name
from tests.conftest import settings_for, start_embedded_postgres
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    function_handler,
    load_event,
    with_query,
)
from tests.contract.test_metrics_handlers import Emitted, emf_metrics
from tests.support.serve import Serve, serve_process, wait_until

pytestmark = pytest.mark.chaos

BREAKER = "database_primary"  # the primary pool's breaker (no replica: reads use it too)
OPEN_TIMEOUT_S = 3.0
NAMESPACE = "edgemart-chaos"
SERVICE = "edgemart-chaos-test"
# A breaker that opens after two failures and closes after one good probe, tried 3 s after it
# opened; a pool that gives up on a connection after a second.
BREAKER_SETTINGS: dict[str, object] = {
    "circuit_failure_threshold": 2,
    "circuit_success_threshold": 1,
    "circuit_open_timeout_s": OPEN_TIMEOUT_S,
    "db_pool_timeout_s": 1.0,
}
DEADLINE_S = 30.0


class OwnDatabase:
    """A migrated PostgreSQL of the test's own, stopped and started again in the same data
    folder (so at the same address)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server = start_embedded_postgres(directory)
        self.running = True
        self.url = str(self.server.get_uri())  # type: ignore[attr-defined]
        apply_migrations(self.url)

    def stop(self) -> None:
        """Stop the server (its clients' connections are cut); returns once it is down."""
        if self.running:
            self.server.cleanup()  # type: ignore[attr-defined]
            self.running = False

    def start(self) -> None:
        self.server = start_embedded_postgres(self.directory)
        self.running = True


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[OwnDatabase]:
    database = OwnDatabase(tmp_path / "pg")
    try:
        yield database
    finally:
        database.stop()


def until(done: Callable[[], bool], what: str) -> None:
    """Call `done` until it says so; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE_S} s")


# ---- EMF from a Lambda handler ----


def breaker_changes(emitted: list[Emitted]) -> list[str]:
    """The states the breaker entered, by the `circuit_state_changes` of one invocation."""
    entered = []
    for metric in emitted:
        if metric.name == metrics.CIRCUIT_STATE_CHANGES.name:
            assert metric.dimensions == {
                "breaker": BREAKER,
                "state": metric.dimensions["state"],
                "service": SERVICE,
            }
            assert metric.unit == "Count" and metric.namespace == NAMESPACE
            entered += [metric.dimensions["state"]] * int(sum(metric.values))
    return entered


def open_times(emitted: list[Emitted]) -> list[float]:
    found = [m for m in emitted if m.name == metrics.CIRCUIT_OPEN_TIME.name]
    for metric in found:
        assert metric.unit == "Seconds"
        assert metric.dimensions == {"breaker": BREAKER, "service": SERVICE}
    return [value for metric in found for value in metric.values]


def test_the_breaker_opening_and_closing_is_in_the_lambda_emf(
    own_database: OwnDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics.drain_pending()  # what other tests in this process recorded is not ours
    settings = settings_for(
        own_database.url,
        cursor_secret="s",
        metrics_namespace=NAMESPACE,
        metrics_service=SERVICE,
        rate_limit_overrides=(("search", 0, 60),),
        **BREAKER_SETTINGS,
    )
    invocations: list[tuple[int, list[Emitted]]] = []
    with function_handler(search_function.routes, settings, "search") as (handler, _):

        def search(term: str) -> tuple[int, list[Emitted]]:
            event = with_query(load_event("apigw_v2_get_search.json"), {"q": term})
            status = handler(event, FakeLambdaContext())["statusCode"]
            invocations.append((status, emf_metrics(capsys.readouterr().out)))
            return invocations[-1]

        status, emitted = search("lamp")
        assert status == 200
        assert breaker_changes(emitted) == []

        own_database.stop()
        down = len(invocations)
        # Each search a new term, so no cached copy answers for the database.
        until(lambda: "open" in breaker_changes(search(f"outage-{len(invocations)}")[1]), "open")
        status, refused = search("while-open")  # refused by the breaker at once
        assert status == 503 and breaker_changes(refused) == []
        outage = invocations[down:]
        assert {status for status, _ in outage} == {503}
        assert [state for _, emitted in outage for state in breaker_changes(emitted)] == ["open"]
        assert [t for _, emitted in outage for t in open_times(emitted)] == []

        own_database.start()
        time.sleep(OPEN_TIMEOUT_S)
        back = len(invocations)
        until(lambda: search(f"back-{len(invocations)}")[0] == 200, "a search answered")
    recovery = invocations[back:]
    # The first search after the open timeout is the probe: it half-opens the breaker, gets
    # its answer and closes it, all in one invocation and its EMF.
    assert [breaker_changes(emitted) for _, emitted in recovery] == [["half_open", "closed"]]
    [(_, closing)] = recovery
    [open_s] = open_times(closing)
    assert open_s >= OPEN_TIMEOUT_S


# ---- Prometheus from `edgemart serve` ----


@contextmanager
def serve_on(database_url: str, tmp_path: Path) -> Iterator[Serve]:
    """A real `edgemart serve` (one worker) on `database_url` with the quick breaker, rate
    limits off; stopped, and every process it started with it, when the block ends."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    env.update(
        {
            "DATABASE_URL": database_url,
            "JWT_SECRET": "x" * 32,
            "TMPDIR": str(temp),
            "RATE_LIMIT_SEARCH": "off",
            **{name.upper(): str(value) for name, value in BREAKER_SETTINGS.items()},
        }
    )
    with serve_process(env, tmp_path / "serve.log", temp, "--no-demo") as serve:
        wait_until(lambda: "Application startup complete." in serve.messages(), "serve up", serve)
        yield serve


def scraped(client: httpx.Client, metric: Metric) -> dict[str, float]:
    """One family of a `/metrics` scrape: the value of each of our breaker's series, by its
    state label (the empty string for a metric without one)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        if family.name == prometheus_name(metric):
            return {
                sample.labels.get("state", ""): sample.value
                for sample in family.samples
                if sample.name.endswith("_total") and sample.labels.get("breaker") == BREAKER
            }
    raise AssertionError(f"no {prometheus_name(metric)} family in the scrape")


def test_the_breaker_opening_and_closing_is_in_the_gateways_prometheus_text(
    own_database: OwnDatabase, tmp_path: Path
) -> None:
    with (
        serve_on(own_database.url, tmp_path) as serve,
        httpx.Client(base_url=serve.url, timeout=30) as client,
    ):

        def search(term: str) -> int:
            return client.get("/marketplace/search", params={"q": term}).status_code

        assert search("lamp") == 200
        assert scraped(client, metrics.CIRCUIT_STATE_CHANGES) == {}

        own_database.stop()
        searches = iter(range(10_000))
        until(
            lambda: (
                search(f"outage-{next(searches)}") == 503
                and scraped(client, metrics.CIRCUIT_STATE_CHANGES).get("open", 0) >= 1
            ),
            "the breaker opened",
        )
        while_open = scraped(client, metrics.CIRCUIT_STATE_CHANGES)
        assert while_open.get("closed", 0) == 0  # no probe can succeed yet

        own_database.start()
        until(lambda: search(f"back-{next(searches)}") == 200, "a search answered")
        after = scraped(client, metrics.CIRCUIT_STATE_CHANGES)
        # The gateway's heartbeat probes the breaker too, so probes may have failed (and
        # opened it again) before one succeeded: each opening ended in a probe, and the one
        # probe that succeeded closed it.
        assert after["open"] >= while_open["open"] >= 1
        assert after["half_open"] == after["open"]
        assert after["closed"] == 1
        [open_s] = scraped(client, metrics.CIRCUIT_OPEN_TIME).values()
        assert open_s >= OPEN_TIMEOUT_S

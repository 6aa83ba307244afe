"""Lambda handlers invoked with real API Gateway, EventBridge and SQS events write their
metrics as CloudWatch EMF on stdout: the documents are parsed back here (namespace,
dimensions, units, values), as CloudWatch would read them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import functions.home.app as home_function
import functions.purchase.app as purchase_function
from edgemart import metrics
from edgemart.appfactory import build_app, lambda_handler
from edgemart.counters import search_count_entry
from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.services import Services
from edgemart.settings import Settings
from functions.order_worker.app import order_worker
from functions.refresh_views.app import refresh_views
from tests.conftest import LogCapture, settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    installed_services,
    load_event,
    sqs_event_with_a_queued_order,
    with_request,
)
from tests.support.purchases import fund, new_product
from tests.support.tokens import SECRET, auth

NAMESPACE = "edgemart-contract"
SERVICE = "edgemart-test"


@dataclass(frozen=True)
class Emitted:
    """One metric of one EMF document."""

    namespace: str
    name: str
    unit: str
    dimensions: dict[str, str]
    values: list[float]


def emf_metrics(stdout: str) -> list[Emitted]:
    """Every metric of every EMF document among the stdout lines (log lines are skipped)."""
    found = []
    for line in stdout.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        [directive] = document["_aws"]["CloudWatchMetrics"]
        [dimension_names] = directive["Dimensions"]  # one dimension set per document
        dimensions = {name: document[name] for name in dimension_names}
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            found.append(
                Emitted(directive["Namespace"], metric["Name"], metric["Unit"], dimensions, values)
            )
    return found


def one(emitted: list[Emitted], name: str, **dimensions: str) -> Emitted:
    matching = [
        metric
        for metric in emitted
        if metric.name == name and metric.dimensions == {**dimensions, "service": SERVICE}
    ]
    assert len(matching) == 1, (name, dimensions, emitted)
    return matching[0]


def named(emitted: list[Emitted], name: str) -> list[Emitted]:
    return [metric for metric in emitted if metric.name == name]


@pytest.fixture
def drained() -> None:
    """Nothing recorded before the test (by other tests in this process) is pending."""
    metrics.drain_pending()


def metrics_settings(database_url: str, **overrides: object) -> Settings:
    return settings_for(
        database_url, metrics_namespace=NAMESPACE, metrics_service=SERVICE, **overrides
    )


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def limited_home(catalog_database_url: str, drained: None) -> Iterator[Handler]:
    """The home function's Lambda handler, built as its module builds it, allowing one
    request a minute."""
    settings = metrics_settings(catalog_database_url, rate_limit_overrides=(("home", 1, 60),))
    app = build_app(home_function.routes, services=Services.from_settings(settings))
    with installed_services(app, settings):
        yield lambda_handler(app, "home")


def test_a_request_writes_its_count_latency_and_cache_lookup(
    limited_home: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    response = limited_home(load_event("apigw_v2_get_home.json"), FakeLambdaContext())
    assert response["statusCode"] == 200
    emitted = emf_metrics(capsys.readouterr().out)
    assert emitted, "no EMF document on stdout"
    assert {metric.namespace for metric in emitted} == {NAMESPACE}
    requests = one(emitted, "requests", route_group="home", status_class="2xx")
    assert (requests.unit, requests.values) == ("Count", [1.0])
    latency = one(emitted, "request_latency", route_group="home")
    assert latency.unit == "Milliseconds" and len(latency.values) == 1
    assert latency.values[0] > 0
    lookup = one(emitted, "cache_lookups", layer="l1", cache_rule="home", result="miss")
    assert lookup.values == [1.0]
    assert not named(emitted, "rate_limited_requests")


def test_a_429_is_counted_as_rate_limited(
    limited_home: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    event = load_event("apigw_v1_get_home.json")
    assert limited_home(event, FakeLambdaContext())["statusCode"] == 200
    capsys.readouterr()
    assert limited_home(event, FakeLambdaContext())["statusCode"] == 429
    emitted = emf_metrics(capsys.readouterr().out)
    assert one(emitted, "rate_limited_requests", route_group="home").values == [1.0]
    assert one(emitted, "requests", route_group="home", status_class="4xx").values == [1.0]
    assert not named(emitted, "cache_lookups")  # refused before the route ran


@pytest.fixture
def purchases(catalog_database_url: str, drained: None) -> Iterator[Services]:
    settings = metrics_settings(catalog_database_url, jwt_secret=SECRET)
    with installed_services(purchase_function.app, settings) as services:
        yield services


def test_purchase_outcomes_are_counted_by_code(
    purchases: Services, catalog_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    product = new_product(catalog_database_url, stock=1)
    fund(catalog_database_url, "emf-buyer", 10_000)

    def purchase(quantity: int) -> dict[str, Any]:
        headers = {
            **auth("emf-buyer"),
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        }
        body = {"product_id": product, "quantity": quantity}
        request = with_request(load_event("apigw_v2_post_purchases.json"), headers, body)
        return purchase_function.handler(request, FakeLambdaContext())

    assert purchase(1)["statusCode"] == 201
    completed = emf_metrics(capsys.readouterr().out)
    assert one(completed, "purchases", outcome="completed").values == [1.0]
    assert one(completed, "requests", route_group="purchases", status_class="2xx").values == [1.0]

    assert purchase(1)["statusCode"] == 409  # the only one was sold
    refused = emf_metrics(capsys.readouterr().out)
    assert one(refused, "purchases", outcome="out_of_stock").values == [1.0]
    assert [metric.dimensions["outcome"] for metric in named(refused, "purchases")] == [
        "out_of_stock"
    ]


def job_runner(job: Any, database_url: str) -> JobRunner:
    return JobRunner(job, services=Services.from_settings(metrics_settings(database_url)))


def test_a_scheduled_job_writes_its_metrics_and_one_cold_start(
    catalog_database_url: str, drained: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = job_runner(refresh_views, catalog_database_url)
    poisoned = json.dumps(["nul\x00query", "client"])
    try:
        services = runner.services_for_run()
        asyncio.run(services.search_counts.record(poisoned))  # in-process buffer
        event = load_event("eventbridge_scheduled.json")
        assert runner.handler(event, FakeLambdaContext())["status"] == "refreshed"
        first = emf_metrics(capsys.readouterr().out)
        asyncio.run(services.search_counts.record(search_count_entry("ok", "not-a-hash")))
        runner.handler(event, FakeLambdaContext())
        second = emf_metrics(capsys.readouterr().out)
    finally:
        runner.close()
    assert {metric.namespace for metric in first} == {NAMESPACE}
    assert one(first, "cold_starts", function="refresh_views").values == [1.0]
    assert one(first, "counter_entries_dropped", buffer="search_counts").values == [1.0]
    assert not named(second, "cold_starts")  # a warm invocation
    # The second run dropped its entry (a client that is no client hash) but nothing else.
    assert one(second, "counter_entries_dropped", buffer="search_counts").values == [1.0]


def test_the_sqs_worker_writes_queued_order_outcomes(
    catalog_database_url: str, drained: None, capsys: pytest.CaptureFixture[str]
) -> None:
    event, _ = sqs_event_with_a_queued_order(catalog_database_url, "emf-worker", 0)
    runner = job_runner(order_worker, catalog_database_url)
    try:
        response = runner.handler(event, FakeLambdaContext())
    finally:
        runner.close()
    assert len(response["batchItemFailures"]) == 1  # the record that is not ours
    emitted = emf_metrics(capsys.readouterr().out)
    assert {metric.namespace for metric in emitted} == {NAMESPACE}
    assert one(emitted, "cold_starts", function="order_worker").values == [1.0]
    # The buyer's wallet is empty: the order is applied as failed, with its code.
    [outcome] = named(emitted, "queued_orders")
    assert outcome.dimensions == {"outcome": "insufficient_funds", "service": SERVICE}
    assert outcome.values == [1.0]


async def failing_job(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    metrics.record(metrics.DB_RETRIES)
    raise RuntimeError("the job failed")


def test_a_handler_that_raises_still_writes_its_metrics(
    catalog_database_url: str, drained: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = job_runner(failing_job, catalog_database_url)
    try:
        with pytest.raises(RuntimeError, match="the job failed"):
            runner.handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
    finally:
        runner.close()
    emitted = emf_metrics(capsys.readouterr().out)
    assert one(emitted, "db_retries").values == [1.0]
    assert one(emitted, "cold_starts", function="failing_job").values == [1.0]


def test_log_lines_of_an_invocation_carry_the_lambda_context(
    catalog_database_url: str, drained: None, captured_logs: LogCapture
) -> None:
    context = FakeLambdaContext(aws_request_id="0d6f5c7a-emf-log-test")
    runner = job_runner(refresh_views, catalog_database_url)
    try:
        runner.handler(load_event("eventbridge_scheduled.json"), context)
        runner.handler(load_event("eventbridge_scheduled.json"), context)
    finally:
        runner.close()
    finished = captured_logs.lines("job finished")
    assert len(finished) == 2
    for line in finished:
        assert line["function_name"] == context.function_name
        assert line["function_arn"] == context.invoked_function_arn
        assert line["function_memory_size"] == context.memory_limit_in_mb
        assert line["function_request_id"] == context.aws_request_id
    # Powertools' cold start is per process: only an environment's first invocation has it.
    assert finished[1]["cold_start"] is False
    logger.info("after the invocation")  # nothing of the invocation stays on later lines
    [after] = captured_logs.lines("after the invocation")
    assert "function_name" not in after and "cold_start" not in after

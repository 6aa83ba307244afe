"""Traces from Lambda handlers with real events, as X-Ray's daemon receives them: a purchase
through the purchase function's handler (API Gateway event) and a scheduled job's run
(EventBridge event), each one trace under the segment Lambda opened for the invocation, with
its request id on every span and its trace id on every log line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import functions.health.app as health_function
import functions.purchase.app as purchase_function
from functions.refresh_views.app import refresh_views
from tests.conftest import LogCapture, settings_for, unused_port
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    function_handler,
    headers_of,
    job_handler_on,
    load_event,
    with_request,
)
from tests.support.purchases import fund, new_product
from tests.support.tokens import SECRET, headers
from tests.xray_daemon import XRayDaemonStub

TRACE = "1-5759e988-bd862e3fe1be46a994272793"
LAMBDA_SEGMENT = "53995c3f42cd8ad8"


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[XRayDaemonStub]:
    """The X-Ray daemon, and the trace header the Lambda runtime sets for an invocation
    whose function has active tracing."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={TRACE};Parent={LAMBDA_SEGMENT};Sampled=1")
    stub = XRayDaemonStub()
    yield stub
    stub.close()


def by_parent(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    children: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        children.setdefault(document["parent_id"], []).append(document)
    return children


@pytest.mark.parametrize(
    "event_name", ["apigw_v2_post_purchases.json", "apigw_v1_post_purchases.json"]
)
def test_a_purchase_is_one_trace_with_its_statements(
    catalog_database_url: str,
    daemon: XRayDaemonStub,
    captured_logs: LogCapture,
    event_name: str,
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=5, price=1500)
    buyer = f"traced-{uuid.uuid4().hex[:8]}"
    fund(url, buyer, 10_000)
    settings = settings_for(
        url,
        jwt_secret=SECRET,
        tracing="xray",
        xray_daemon_address=daemon.address,
        access_log_sample_rate=1.0,
    )
    event = with_request(
        load_event(event_name),
        {**headers(buyer), "Content-Type": "application/json"},
        {"product_id": product, "quantity": 1},
    )
    with function_handler(purchase_function.routes, settings, "purchase") as (handler, _):
        response = handler(event, FakeLambdaContext())
    assert response["statusCode"] == 201, body_of(response)
    request_id = headers_of(response)["x-request-id"]

    documents = daemon.receive()
    assert {document["trace_id"] for document in documents} == {TRACE}
    children = by_parent(documents)
    (request,) = children[LAMBDA_SEGMENT]  # the one span directly under Lambda's segment
    assert request["type"] == "subsegment"
    assert request["name"] == "POST /purchases"
    assert request["http"]["response"] == {"status": 201}
    assert request["annotations"]["request_id"] == request_id
    assert request["metadata"]["default"]["faas.invocation_id"] == FakeLambdaContext.aws_request_id

    under_request = children[request["id"]]
    assert len(documents) == 1 + len(under_request)  # nothing deeper, nothing elsewhere
    statements = [document for document in under_request if "sql" in document]
    assert statements, under_request
    assert any("FROM purchase(" in s["sql"]["sanitized_query"] for s in statements)
    for span in under_request:
        assert span["annotations"]["request_id"] == request_id
        assert request["start_time"] <= span["start_time"] <= span["end_time"]
        assert span["end_time"] <= request["end_time"]

    (access,) = captured_logs.lines("request")
    assert access["request_id"] == request_id
    assert access["trace_id"] == TRACE


def test_a_scheduled_run_is_one_trace(
    catalog_database_url: str, daemon: XRayDaemonStub, captured_logs: LogCapture
) -> None:
    settings = settings_for(
        catalog_database_url, tracing="xray", xray_daemon_address=daemon.address
    )
    context = FakeLambdaContext(aws_request_id="run-1")
    with job_handler_on(refresh_views, settings) as handler:
        handler(load_event("eventbridge_scheduled.json"), context)

    documents = daemon.receive()
    children = by_parent(documents)
    (run,) = children[LAMBDA_SEGMENT]
    assert run["name"] == "refresh_views"
    assert run["annotations"] == {"aws_request_id": "run-1"}
    statements = children[run["id"]]
    assert statements and all("sql" in document for document in statements)
    assert {document["trace_id"] for document in documents} == {TRACE}
    (finished,) = captured_logs.lines("job finished")
    assert finished["trace_id"] == TRACE and finished["aws_request_id"] == "run-1"


def test_every_line_of_a_request_carries_its_trace_request_and_invocation(
    daemon: XRayDaemonStub, captured_logs: LogCapture
) -> None:
    """A health check with its database down: the handler logs why, then the access line;
    both carry the trace id X-Ray received, the request id, and Powertools' Lambda context."""
    unreachable = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres"
    settings = settings_for(
        unreachable,
        tracing="xray",
        xray_daemon_address=daemon.address,
        health_db_timeout_s=0.5,
        db_pool_timeout_s=0.5,
    )
    context = FakeLambdaContext(aws_request_id="5b1d0c2e-trace-lines")
    with function_handler(health_function.routes, settings, "health") as (handler, _):
        response = handler(load_event("apigw_v2_get_health.json"), context)
    assert response["statusCode"] == 503
    request_id = headers_of(response)["x-request-id"]

    (request,) = by_parent(daemon.receive())[LAMBDA_SEGMENT]
    assert request["annotations"]["request_id"] == request_id
    lines = captured_logs.lines()
    messages = [str(line["message"]) for line in lines]
    assert "request" in messages
    assert any(message.startswith("health: primary database check failed") for message in messages)
    for line in lines:  # every line the invocation wrote, the access line included
        assert line["trace_id"] == request["trace_id"] == TRACE, line
        assert line["request_id"] == request_id, line
        assert line["function_request_id"] == context.aws_request_id, line
        assert line["function_name"] == context.function_name, line
        assert isinstance(line["cold_start"], bool), line

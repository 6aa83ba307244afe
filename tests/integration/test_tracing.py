"""Tracing through the gateway against real PostgreSQL and Redis, SQS and Secrets Manager
under moto: each Redis command and AWS call is a span of its request, the access line carries
the trace id, OTLP export reaches a collector, and with tracing off nothing of it is loaded
or sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgemart.services import Services
from edgemart.settings import Settings
from tests.conftest import (
    UPSTASH_TOKEN,
    LogCapture,
    RedisProcess,
    open_gateway,
    serve_in_thread,
    settings_for,
)
from tests.support.purchases import fund, new_product
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers
from tests.xray_daemon import XRayDaemonStub

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parents[2]


def traced_gateway(settings: Settings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    services = Services.from_settings(settings)
    return open_gateway(services, peer=("203.0.113.9", 1), base_url="http://t")


def request_segment(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's request: the trace's one segment (no parent)."""
    (segment,) = [document for document in documents if "parent_id" not in document]
    return segment


def xray_settings(url: str | None, daemon: XRayDaemonStub, **overrides: Any) -> Settings:
    return settings_for(
        url,
        tracing="xray",
        xray_daemon_address=daemon.address,
        jwt_secret=SECRET,
        cursor_secret="tracing-cursor-secret",
        access_log_sample_rate=1.0,
        **overrides,
    )


async def test_redis_commands_are_spans_of_their_request(
    catalog_database_url: str,
    own_redis: RedisProcess,
    daemon: XRayDaemonStub,
    captured_logs: LogCapture,
) -> None:
    """The rate limiter's check goes through the process's one Redis client as a span of
    the request; the search counters do not touch Redis within the request (their flush
    runs later, off the request path: decision 0039)."""
    settings = xray_settings(
        catalog_database_url, daemon, redis_url=own_redis.url, rate_limit_timeout_ms=5000.0
    )
    async with traced_gateway(settings) as client:
        response = await client.get(
            "/marketplace/search", params={"q": "lamp"}, headers=auth("reader")
        )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]

    documents = daemon.receive()
    segment = request_segment(documents)
    assert segment["name"] == "edgemart"
    assert segment["annotations"] == {"request_id": request_id, "route": "/marketplace/search"}
    redis = [document for document in documents if document["name"].startswith("redis@")]
    commands = {document["metadata"]["default"]["db.operation.name"] for document in redis}
    assert "EVALSHA" in commands  # the rate limit check
    assert "HINCRBY" not in commands  # counted in the process, flushed later
    for document in redis:
        assert document["parent_id"] == segment["id"]
        assert document["trace_id"] == segment["trace_id"]
        assert document["annotations"] == {"request_id": request_id}
        assert document["namespace"] == "remote"

    (access,) = captured_logs.lines("request")
    assert access["request_id"] == request_id
    assert access["trace_id"] == segment["trace_id"]


async def test_upstash_commands_are_spans_of_their_request(
    catalog_database_url: str, upstash_url: str, daemon: XRayDaemonStub
) -> None:
    settings = xray_settings(
        catalog_database_url,
        daemon,
        upstash_redis_rest_url=upstash_url,
        upstash_redis_rest_token=UPSTASH_TOKEN,
        rate_limit_timeout_ms=5000.0,
    )
    async with traced_gateway(settings) as client:
        response = await client.get("/marketplace/search", params={"q": "lamp"})
    assert response.status_code == 200, response.text

    documents = daemon.receive()
    segment = request_segment(documents)
    upstash = [document for document in documents if document["name"].startswith("redis@")]
    commands = {document["metadata"]["default"]["db.operation.name"] for document in upstash}
    assert "EVALSHA" in commands
    host = upstash_url.split("://", 1)[1]
    assert {document["name"] for document in upstash} == {f"redis@{host}"}
    assert {document["parent_id"] for document in upstash} == {segment["id"]}


async def test_a_queued_purchase_sends_its_message_in_a_span(
    catalog_database_url: str, aws: None, daemon: XRayDaemonStub
) -> None:
    import boto3

    queue_url = boto3.client("sqs").create_queue(QueueName="traced-purchases")["QueueUrl"]
    url = catalog_database_url
    product = new_product(url, stock=5, price=1000)
    sql(url, "UPDATE products SET purchase_mode = 'queued' WHERE id = %s", product)
    buyer = f"queued-{uuid.uuid4().hex[:8]}"
    fund(url, buyer, 10_000)
    settings = xray_settings(url, daemon, purchase_queue_url=queue_url)
    async with traced_gateway(settings) as client:
        response = await client.post(
            "/purchases", json={"product_id": product, "quantity": 1}, headers=headers(buyer)
        )
    assert response.status_code == 202, response.text

    documents = daemon.receive()
    segment = request_segment(documents)
    (send,) = [document for document in documents if document.get("namespace") == "aws"]
    assert send["name"] == "SQS"
    assert send["aws"]["operation"] == "SendMessage"
    assert send["aws"]["region"] == "us-east-1"
    assert send["aws"]["request_id"]
    assert send["parent_id"] == segment["id"]
    assert send["annotations"] == {"request_id": response.headers["x-request-id"]}
    assert "fault" not in send


async def test_reading_the_database_secret_is_a_span(
    module_database_url: str, aws: None, daemon: XRayDaemonStub
) -> None:
    """The first request opens the pool, whose first connection reads the credentials."""
    import boto3

    params = conninfo_to_dict(module_database_url)
    secret = {
        "username": params.get("user") or "postgres",
        "password": params.get("password") or "unused-by-trust-auth",
        "host": params.get("host"),
        "port": int(params.get("port") or 5432),
        "dbname": params["dbname"],
    }
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"edgemart/{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )["ARN"]
    settings = xray_settings(None, daemon, database_secret_arn=arn)
    async with traced_gateway(settings) as client:
        response = await client.get("/wallet", headers=auth("secret-reader"))
    assert response.status_code == 200, response.text

    documents = daemon.receive()
    segment = request_segment(documents)
    # One read per connection the pool opens for the request (it may open two at once).
    reads = [document for document in documents if document.get("namespace") == "aws"]
    assert reads
    for read in reads:
        assert read["name"] == "Secrets Manager"
        assert read["aws"]["operation"] == "GetSecretValue"
        assert read["parent_id"] == segment["id"]
    assert any("FROM wallets" in d.get("sql", {}).get("sanitized_query", "") for d in documents)


async def test_otlp_export_reaches_a_collector(
    catalog_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TRACING=otlp`: spans batched and posted as OTLP/HTTP protobuf, sent by the time the
    services are closed."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[ExportTraceServiceRequest] = []

    async def collect(request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        received.append(export)
        return Response(status_code=200)

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    with serve_in_thread(collector) as collector_url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
        settings = settings_for(catalog_database_url, tracing="otlp", jwt_secret=SECRET)
        async with traced_gateway(settings) as client:
            response = await client.get("/wallet", headers=auth("otlp-reader"))
        assert response.status_code == 200

    spans = [
        span
        for export in received
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    (root,) = [span for span in spans if not span.parent_span_id]
    assert root.name == "GET /wallet"
    statements = [span for span in spans if span.parent_span_id == root.span_id]
    assert "SELECT" in {span.name for span in statements}
    request_ids = {
        attribute.value.string_value
        for span in spans
        for attribute in span.attributes
        if attribute.key == "request_id"
    }
    assert request_ids == {response.headers["x-request-id"]}


PROBE = """
import json, sys
from starlette.testclient import TestClient
import functions.search.app as search
with TestClient(search.app) as client:
    response = client.get(
        "/marketplace/search", params={"q": "lamp"}, headers=json.loads(sys.argv[1])
    )
print(json.dumps({
    "status": response.status_code,
    "loaded": sorted(name for name in sys.modules if name.startswith(tuple(sys.argv[2:]))),
}))
"""


def probe_search(environ: dict[str, str], loaded: tuple[str, ...]) -> dict[str, Any]:
    """One search through the search function, imported as Lambda imports it, in a process
    of its own; returns its status and which of the `loaded` modules it ended up with."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'edgemart'}",
        "JWT_SECRET": SECRET,
        "CURSOR_SECRET": "probe-cursor-secret",
        **environ,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(auth("probe")), *loaded],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    probe: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return probe


@pytest.mark.parametrize("with_redis", [False, True], ids=["database", "database+redis"])
def test_tracing_off_loads_no_opentelemetry_and_sends_nothing(
    catalog_database_url: str,
    own_redis: RedisProcess,
    daemon: XRayDaemonStub,
    with_redis: bool,
) -> None:
    """redis-py would import OpenTelemetry's metrics SDK by itself: edgemart hides it."""
    environ = {"DATABASE_URL": catalog_database_url, "AWS_XRAY_DAEMON_ADDRESS": daemon.address}
    if with_redis:
        environ["REDIS_URL"] = own_redis.url
    probe = probe_search(environ, ("opentelemetry", "edgemart.tracing"))
    assert probe == {"status": 200, "loaded": []}
    assert daemon.receive() == []


def test_the_same_probe_sees_tracing_when_it_is_on(
    catalog_database_url: str, own_redis: RedisProcess, daemon: XRayDaemonStub
) -> None:
    """What the probe above would see with `TRACING=xray`: the tracer, the request's segment,
    and still not the metrics SDK redis-py would load."""
    probe = probe_search(
        {
            "DATABASE_URL": catalog_database_url,
            "REDIS_URL": own_redis.url,
            "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
            "TRACING": "xray",
        },
        ("edgemart.tracing.tracer", "opentelemetry.sdk.metrics"),
    )
    assert probe == {"status": 200, "loaded": ["edgemart.tracing.tracer"]}
    assert request_segment(daemon.receive())["annotations"]["route"] == "/marketplace/search"

"""edgemart.tracing.xray: trace headers, trace ids and the segment documents spans become,
from spans a real OpenTelemetry SDK made."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode, Tracer, set_span_in_context

from edgemart.settings import SettingsError
from edgemart.tracing.xray import (
    XRayIdGenerator,
    XRayUdpExporter,
    daemon_address,
    parse_trace_header,
    xray_document,
    xray_trace_id,
)
from tests.xray_daemon import XRayDaemonStub

LAMBDA_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider(id_generator=XRayIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    yield provider.get_tracer("test")
    provider.shutdown()


def only(exported: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [span for span in exported.get_finished_spans() if span.name == name]
    return span


def client_call(
    tracer: Tracer,
    name: str,
    attributes: dict[str, str],
    *,
    request: str = "request",
    parent: Context | None = None,
) -> None:
    """A CLIENT span `name` with `attributes`, inside the SERVER span `request`."""
    with tracer.start_as_current_span(request, context=parent, kind=SpanKind.SERVER):
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            pass


def test_a_lambda_trace_header_is_the_remote_parent() -> None:
    parent = parse_trace_header(LAMBDA_HEADER)
    assert parent is not None
    assert xray_trace_id(parent.trace_id) == "1-5759e988-bd862e3fe1be46a994272793"
    assert f"{parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert parent.is_remote and parent.trace_flags.sampled


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # no parent: nothing to hang spans under
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-not-hex;Parent=53995c3f42cd8ad8",
        "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
    ],
)
def test_no_parent_from_a_header_without_one(header: str | None) -> None:
    assert parse_trace_header(header) is None


def test_an_unsampled_header_gives_an_unsampled_parent() -> None:
    parent = parse_trace_header(LAMBDA_HEADER.replace("Sampled=1", "Sampled=0"))
    assert parent is not None and not parent.trace_flags.sampled


def test_trace_ids_start_with_the_time_in_seconds() -> None:
    before = int(time.time())
    trace_id = xray_trace_id(XRayIdGenerator().generate_trace_id())
    version, seconds, _ = trace_id.split("-")
    assert version == "1"
    assert before <= int(seconds, 16) <= int(time.time())


def test_a_request_of_our_own_is_the_trace_segment(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {
                "http.request.method": "GET",
                "url.path": "/health",
                "http.route": "/health",
                "http.response.status_code": 200,
                "request_id": "r-1",
            }
        )
    document = xray_document(only(exported, "GET /health"), "edgemart")
    assert document["name"] == "edgemart"
    assert "type" not in document and "parent_id" not in document
    assert document["annotations"] == {"request_id": "r-1", "route": "/health"}
    assert document["http"] == {
        "request": {"method": "GET", "url": "/health"},
        "response": {"status": 200},
    }
    assert not {"fault", "error", "throttle"} & document.keys()
    assert document["end_time"] >= document["start_time"] > 0


def test_a_statement_is_a_subsegment_of_its_request(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    lambda_segment = parse_trace_header(LAMBDA_HEADER)
    assert lambda_segment is not None
    client_call(
        tracer,
        "SELECT",
        {
            "db.system.name": "postgresql",
            "db.namespace": "shop",
            "server.address": "db.internal",
            "db.query.text": "SELECT 1",
            "request_id": "r-2",
        },
        request="POST /purchases",
        parent=set_span_in_context(NonRecordingSpan(lambda_segment)),
    )
    request = xray_document(only(exported, "POST /purchases"), "edgemart")
    statement = xray_document(only(exported, "SELECT"), "edgemart")
    assert request["type"] == "subsegment"
    assert request["parent_id"] == "53995c3f42cd8ad8"  # Lambda's segment for the invocation
    assert request["trace_id"] == statement["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert statement["parent_id"] == request["id"]
    assert statement["name"] == "shop@db.internal"
    assert statement["namespace"] == "remote"
    assert statement["sql"] == {"database_type": "PostgreSQL", "sanitized_query": "SELECT 1"}
    assert statement["annotations"] == {"request_id": "r-2"}


def test_an_aws_call_is_named_by_its_service(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    client_call(
        tracer,
        "SQS.SendMessage",
        {
            "rpc.system": "aws-api",
            "rpc.service": "SQS",
            "rpc.method": "SendMessage",
            "cloud.region": "eu-west-1",
            "aws.request_id": "req-9",
        },
    )
    document = xray_document(only(exported, "SQS.SendMessage"), "edgemart")
    assert document["name"] == "SQS"
    assert document["namespace"] == "aws"
    assert document["aws"] == {
        "operation": "SendMessage",
        "region": "eu-west-1",
        "request_id": "req-9",
    }


@pytest.mark.parametrize(
    ("status", "flags"),
    [(404, {"error"}), (429, {"error", "throttle"}), (503, {"fault"}), (200, set())],
)
def test_a_response_status_sets_the_outcome_flags(
    tracer: Tracer, exported: InMemorySpanExporter, status: int, flags: set[str]
) -> None:
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.response.status_code", status)
    document = xray_document(only(exported, "GET /x"), "edgemart")
    assert {"error", "throttle", "fault"} & document.keys() == flags


def test_a_failed_call_is_a_fault_with_its_exception(
    tracer: Tracer, exported: InMemorySpanExporter
) -> None:
    with pytest.raises(ConnectionError):
        with tracer.start_as_current_span("PING", kind=SpanKind.CLIENT):
            raise ConnectionError("refused")
    span = only(exported, "PING")
    assert span.status.status_code is StatusCode.ERROR
    document = xray_document(span, "edgemart")
    assert document["fault"] is True
    (exception,) = document["cause"]["exceptions"]
    assert exception["type"] == "ConnectionError" and exception["message"] == "refused"


@pytest.fixture
def udp_exporter(daemon: XRayDaemonStub) -> Iterator[XRayUdpExporter]:
    """An exporter sending to the stand-in daemon."""
    exporter = XRayUdpExporter(daemon.address, service="edgemart")
    yield exporter
    exporter.shutdown()


def test_the_exporter_sends_one_datagram_per_span(
    tracer: Tracer,
    exported: InMemorySpanExporter,
    daemon: XRayDaemonStub,
    udp_exporter: XRayUdpExporter,
) -> None:
    with tracer.start_as_current_span("outer"):
        with tracer.start_as_current_span("inner"):
            pass
    udp_exporter.export(exported.get_finished_spans())
    names = [document.get("name") for document in daemon.receive()]
    assert names == ["inner", "edgemart"]


def test_a_huge_statement_is_sent_without_its_text(
    tracer: Tracer,
    exported: InMemorySpanExporter,
    daemon: XRayDaemonStub,
    udp_exporter: XRayUdpExporter,
) -> None:
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span(
            "SELECT",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.query.text": "x" * 70_000},
        ):
            pass
    udp_exporter.export([only(exported, "SELECT")])
    (document,) = daemon.receive()
    assert "sql" not in document and "metadata" not in document
    assert document["namespace"] == "remote"


def test_the_daemon_address_must_be_host_and_port() -> None:
    assert daemon_address("169.254.79.129:2000") == ("169.254.79.129", 2000)
    with pytest.raises(SettingsError, match="AWS_XRAY_DAEMON_ADDRESS"):
        daemon_address("169.254.79.129")


def test_a_name_loses_what_x_ray_refuses(tracer: Tracer, exported: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("GET /search?q=(x)*"):
            pass
    document = xray_document(only(exported, "GET /search?q=(x)*"), "edgemart")
    assert document["name"] == "GET /searchq=x"

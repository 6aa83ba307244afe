"""X-Ray without the X-Ray SDK: spans sent to the X-Ray daemon as segment documents over UDP.

The daemon (Lambda runs one for a function with `Tracing: Active`) takes one JSON document
per datagram, after a one-line header, and forwards it to X-Ray. In Lambda, the invocation's
trace header (`_X_AMZN_TRACE_ID`) names the trace and the function's own segment, which
Lambda sends itself: a request's span becomes a subsegment of it, and each span under that a
subsegment of its parent, sent as soon as it ends. Outside Lambda the request's span is the
trace's segment, under the service's name.

The X-Ray SDK does the same, but importing it imports botocore (for sampling rules this
needs none of), a cold-start cost decision 0028 measures.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from edgemart.logging import ThrottledWarning
from edgemart.settings import SettingsError

HEADER = b'{"format":"json","version":1}\n'
MAX_DATAGRAM_BYTES = 64_000
MAX_NAME_CHARS = 200
# Attributes X-Ray indexes (searchable as `annotation.<name>`), by attribute name.
# Characters X-Ray refuses in a name (the X-Ray SDK drops the same ones).
_NOT_IN_NAMES = str.maketrans("", "", "?;*()!$~^<>")
ANNOTATIONS = {
    "request_id": "request_id",
    "aws_request_id": "aws_request_id",
    "http.route": "route",
}


def xray_trace_id(trace_id: int) -> str:
    """A 128-bit trace id as X-Ray writes it: `1-<8 hex digits of seconds>-<24 hex digits>`."""
    digits = f"{trace_id:032x}"
    return f"1-{digits[:8]}-{digits[8:]}"


class XRayIdGenerator(IdGenerator):
    """Trace ids X-Ray accepts: the first 32 bits are the trace's start in epoch seconds (X-Ray
    refuses a trace id from too far in the past or future); the rest is random."""

    def generate_span_id(self) -> int:
        return random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return (int(time.time()) << 96) | random.getrandbits(96)


def parse_trace_header(header: str | None) -> SpanContext | None:
    """The remote parent an X-Ray trace header names (`Root=1-5759e988-bd862e3fe1be46a994272793;
    Parent=53995c3f42cd8ad8;Sampled=1`), sampled as it says; None without a root and parent."""
    if not header:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";"))
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    version, _, rest = root.partition("-")
    try:
        trace_id = int(rest.replace("-", ""), 16)
        span_id = int(parent, 16)
    except ValueError:
        return None
    if version != "1" or not trace_id or not span_id:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if fields.get("Sampled") == "1" else 0)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def xray_document(span: ReadableSpan, service: str) -> dict[str, Any]:
    """Pure: the segment document of one ended span."""
    attributes = dict(span.attributes or {})
    document: dict[str, Any] = {
        "id": f"{span.context.span_id:016x}",
        "trace_id": xray_trace_id(span.context.trace_id),
        "start_time": (span.start_time or 0) / 1e9,
        "end_time": (span.end_time or 0) / 1e9,
    }
    if span.parent is None:  # a trace of our own: the request is the segment
        document["name"] = service
    else:
        document["name"] = span.name.translate(_NOT_IN_NAMES)[:MAX_NAME_CHARS]
        document["type"] = "subsegment"
        document["parent_id"] = f"{span.parent.span_id:016x}"
    annotations = {
        key: attributes.pop(name) for name, key in ANNOTATIONS.items() if name in attributes
    }
    if annotations:
        document["annotations"] = annotations
    status: Any = attributes.get("http.response.status_code")
    if span.kind is SpanKind.SERVER:
        document["http"] = _http(attributes, status)
    elif "db.system.name" in attributes:
        document.update(_remote_database(attributes))
    elif attributes.get("rpc.system") == "aws-api":
        document.update(_aws_call(attributes))
    elif span.kind is SpanKind.CLIENT:
        document["namespace"] = "remote"
    document.update(_flags(span, status if span.kind is SpanKind.SERVER else None))
    if attributes:
        document["metadata"] = {"default": {"span": span.name, **attributes}}
    return document


def _http(attributes: Mapping[str, Any], status: Any) -> dict[str, Any]:
    http: dict[str, Any] = {
        "request": {
            "method": attributes.get("http.request.method"),
            "url": attributes.get("url.path"),
        }
    }
    if isinstance(status, int):
        http["response"] = {"status": status}
    return http


def _remote_database(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A database: a node of the service map, named `database@host` for PostgreSQL as the
    X-Ray SDK names one, `redis@host` for Redis."""
    system = attributes["db.system.name"]
    host = attributes.get("server.address", "localhost")
    if system != "postgresql":
        return {"name": f"{system}@{host}", "namespace": "remote"}
    return {
        "name": f"{attributes.get('db.namespace', system)}@{host}",
        "namespace": "remote",
        "sql": {
            "database_type": "PostgreSQL",
            "sanitized_query": attributes.get("db.query.text", ""),
        },
    }


def _aws_call(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """An AWS call: a node named by its service (`SQS`), as X-Ray shows AWS services."""
    aws = {
        "operation": attributes.get("rpc.method"),
        "region": attributes.get("cloud.region"),
        "request_id": attributes.get("aws.request_id"),
    }
    return {
        "name": attributes.get("rpc.service", "AWS"),
        "namespace": "aws",
        "aws": {key: value for key, value in aws.items() if value is not None},
    }


def _flags(span: ReadableSpan, http_status: int | None) -> dict[str, Any]:
    """X-Ray's outcome flags: `fault` for a server error or a failed call, `error` for a
    client error, `throttle` (and `error`) for a 429; the exceptions recorded as the cause."""
    flags: dict[str, Any] = {}
    if isinstance(http_status, int) and http_status < 500:
        if http_status == 429:
            flags["throttle"] = True
        if http_status >= 400:
            flags["error"] = True
    elif http_status is not None or span.status.status_code is StatusCode.ERROR:
        flags["fault"] = True
    exceptions = [
        {
            "id": f"{random.getrandbits(64):016x}",
            "type": str((event.attributes or {}).get("exception.type", "")),
            "message": str((event.attributes or {}).get("exception.message", "")),
        }
        for event in span.events
        if event.name == "exception"
    ]
    if exceptions:
        flags["fault"] = True
        flags["cause"] = {"exceptions": exceptions}
    return flags


def datagram(document: dict[str, Any]) -> bytes:
    return HEADER + json.dumps(document, separators=(",", ":"), default=str).encode()


def daemon_address(address: str) -> tuple[str, int]:
    """`host:port` (as `AWS_XRAY_DAEMON_ADDRESS` holds it) as a socket address."""
    host, _, port = address.strip().rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise SettingsError(f"AWS_XRAY_DAEMON_ADDRESS must be host:port, got {address!r}") from None


class XRayUdpExporter(SpanExporter):
    """Sends each ended span to the X-Ray daemon at once, one datagram each: nothing is left
    in a buffer when Lambda freezes the environment after the response."""

    def __init__(self, address: str, *, service: str) -> None:
        self.address = daemon_address(address)
        self.service = service
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._failures = ThrottledWarning("sending spans to the X-Ray daemon failed (%r)")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.SUCCESS
        for span in spans:
            document = xray_document(span, self.service)
            data = datagram(document)
            if len(data) > MAX_DATAGRAM_BYTES:  # a huge statement's text: keep the timing
                document.pop("metadata", None)
                document.pop("sql", None)
                data = datagram(document)
            try:
                self._socket.sendto(data, self.address)
            except OSError as exc:  # no daemon, a full buffer: tracing never fails a request
                self._failures.note(exc)
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        self._socket.close()

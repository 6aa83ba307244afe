"""`Tracing`: the process's OpenTelemetry tracer and everything that hands it to the places
that trace.

One trace per HTTP request (edgemart.tracing.asgi) or job run (`invocation`), with a span per
database statement (edgemart.tracing.psycopg), Redis command (edgemart.tracing.redis) and AWS
call (edgemart.tracing.aws) under it. Each span carries the request's id as an attribute,
stamped when it starts, and every log line written while a span is current carries the trace
id (`trace_id`), so a log line leads to its trace and a trace to its log lines.

The tracer provider is this object's own, never OpenTelemetry's global one: tests build as
many as they like, and nothing else in the process starts tracing by accident.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind

from edgemart.logging import current_log_keys, logger
from edgemart.settings import Settings
from edgemart.tracing.asgi import RequestTracingMiddleware
from edgemart.tracing.psycopg import traced_cursor_class
from edgemart.tracing.xray import (
    XRayIdGenerator,
    XRayUdpExporter,
    parse_trace_header,
    xray_trace_id,
)

if TYPE_CHECKING:
    from psycopg import AsyncCursor
    from redis.asyncio import Redis
    from starlette.types import ASGIApp
    from upstash_redis.asyncio import Redis as UpstashRedis

SERVICE = "edgemart"
LAMBDA_TRACE_HEADER = "_X_AMZN_TRACE_ID"  # set by the Lambda runtime for each invocation
# Request log keys every span carries from its start.
SPAN_KEYS = ("request_id", "aws_request_id")


def hex_trace_id(trace_id: int) -> str:
    return f"{trace_id:032x}"


class RequestKeysProcessor(SpanProcessor):
    """Stamps each span, as it starts, with the request's id (and Lambda's invocation id)
    from the request's log keys."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        keys = current_log_keys()
        for name in SPAN_KEYS:
            value = keys.get(name)
            if isinstance(value, str):
                span.set_attribute(name, value)


class TraceIdLogFilter(logging.Filter):
    """Adds `trace_id` to each log line written while a span is current."""

    def __init__(self, text: Callable[[int], str]) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = self.text(context.trace_id)
        return True


class Tracing:
    """A tracer provider exporting to `exporter`: each span as it ends (the default, right
    for Lambda, which freezes the process after the response), or in batches from a thread
    (`batch`, for a long-running server). `trace_id_text` writes the trace id in logs as the
    trace's viewer shows it."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        batch: bool = False,
        trace_id_text: Callable[[int], str] = hex_trace_id,
    ) -> None:
        self.provider = TracerProvider(
            # Not Resource.create(): its detectors run in a thread pool, at every cold start.
            resource=Resource({"service.name": SERVICE}),
            id_generator=XRayIdGenerator(),
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(RequestKeysProcessor())
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
        self.tracer = self.provider.get_tracer("edgemart")
        self.trace_id_text = trace_id_text
        self._log_filter = TraceIdLogFilter(trace_id_text)
        logging.getLogger(logger.name).addFilter(self._log_filter)
        self._cursor_class: type[AsyncCursor[Any]] | None = None
        self._redis_class: type[Redis] | None = None

    # ---- The roots of traces ----

    def lambda_parent(self) -> Context | None:
        """The segment Lambda opened for this invocation, as the parent of its spans (read
        from the runtime's trace header; None outside Lambda or without one)."""
        parent = parse_trace_header(os.environ.get(LAMBDA_TRACE_HEADER))
        return None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """`app` with a trace per HTTP request around it."""
        return RequestTracingMiddleware(app, self)

    @contextmanager
    def invocation(self, name: str) -> Iterator[trace.Span]:
        """A Lambda invocation of a job (scheduled or queue function): one trace, under the
        invocation's segment."""
        with self.tracer.start_as_current_span(
            name, context=self.lambda_parent(), kind=SpanKind.SERVER
        ) as span:
            yield span

    # ---- What traces the calls ----

    def cursor_class(self) -> type[AsyncCursor[Any]]:
        """psycopg's `cursor_factory` for connections whose statements are traced."""
        if self._cursor_class is None:
            self._cursor_class = traced_cursor_class(self.tracer)
        return self._cursor_class

    def redis_class(self) -> type[Redis]:
        """redis-py's asyncio client, each command and pipeline traced."""
        if self._redis_class is None:
            from edgemart.tracing.redis import traced_redis_class

            self._redis_class = traced_redis_class(self.tracer)
        return self._redis_class

    def upstash_class(self) -> type[UpstashRedis]:
        """The Upstash REST client, each command traced."""
        from edgemart.tracing.redis import traced_upstash_class

        return traced_upstash_class(self.tracer)

    def trace_aws_client(self, client: Any) -> None:
        """Spans for every call a boto3 client makes."""
        from edgemart.tracing.aws import trace_aws_calls

        trace_aws_calls(client, self.tracer)

    def shutdown(self) -> None:
        """Send what is buffered and stop; the process's log lines stop carrying trace ids."""
        logging.getLogger(logger.name).removeFilter(self._log_filter)
        self.provider.shutdown()


def tracing_from(settings: Settings) -> Tracing:
    """The tracing `TRACING` names (not `off`)."""
    if settings.tracing == "xray":
        exporter = XRayUdpExporter(settings.xray_daemon_address, service=SERVICE)
        return Tracing(exporter, trace_id_text=xray_trace_id)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return Tracing(OTLPSpanExporter(), batch=True)

"""A span per AWS call, through botocore's own events on one client (SQS for queued
purchases, Secrets Manager for the database's credentials).

botocore announces each call (`before-call`), its answer (`after-call`, retries included)
and a call that got no answer (`after-call-error`); handlers registered on a client see only
that client's calls, so nothing is patched and an untraced client pays nothing. The span
starts from the caller's context: a call run in a thread (`asyncio.to_thread`) carries the
request's context there. A call outside a live trace makes no span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from edgemart.tracing.context import in_a_live_trace

SPAN_KEY = "edgemart.span"  # where a call's span waits, in botocore's per-call context


def trace_aws_calls(client: Any, tracer: Tracer) -> None:
    region = client.meta.region_name

    def start(*, model: Any, context: dict[str, Any], **_: Any) -> None:
        if not in_a_live_trace():
            return
        service = model.service_model.service_id
        context[SPAN_KEY] = tracer.start_span(
            f"{service}.{model.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": str(service),
                "rpc.method": model.name,
                "cloud.region": region,
            },
        )
        # Returning nothing lets botocore send the request (a value would replace it).

    def answered(*, http_response: Any, parsed: dict[str, Any], context: Any, **_: Any) -> None:
        span: Span | None = context.pop(SPAN_KEY, None)
        if span is None:
            return
        status = http_response.status_code
        span.set_attribute("http.response.status_code", status)
        request_id = parsed.get("ResponseMetadata", {}).get("RequestId")
        if request_id:
            span.set_attribute("aws.request_id", request_id)
        if status >= 300:
            span.set_status(StatusCode.ERROR, parsed.get("Error", {}).get("Code"))
        span.end()

    def failed(*, exception: BaseException, context: Any, **_: Any) -> None:
        span: Span | None = context.pop(SPAN_KEY, None)
        if span is None:
            return
        span.record_exception(exception)
        span.set_status(StatusCode.ERROR, type(exception).__name__)
        span.end()

    events = client.meta.events
    events.register("before-call", start, unique_id="edgemart-trace-start")
    events.register("after-call", answered, unique_id="edgemart-trace-answered")
    events.register("after-call-error", failed, unique_id="edgemart-trace-failed")

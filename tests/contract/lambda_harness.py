"""Invoking a function's Lambda handler as the Lambda runtime would, for contract tests."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from edgemart.appfactory import build_app, lambda_handler
from edgemart.jobs import Job, JobRunner, LambdaHandler
from edgemart.services import Services
from edgemart.settings import Settings
from tests.conftest import settings_for

EVENTS = Path(__file__).resolve().parent.parent / "events"


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda runtime's context object that code reads."""

    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    function_name: str = "Function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:Function"


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def sqs_event_with_a_queued_order(
    database_url: str, buyer: str, balance_cents: int
) -> tuple[dict[str, Any], str]:
    """The sample SQS event (its own record is not a purchase message) with a second record
    for a new queued order of `buyer`'s, whose wallet holds `balance_cents`: (event, order
    id)."""
    event = load_event("sqs_receive_message.json")
    with psycopg.connect(database_url, autocommit=True) as conn:
        order_id, product_id = conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key) SELECT %s, id, store_id, 1, "
            "price_cents, price_cents, 'queued', %s FROM products "
            "WHERE stock > 0 AND is_available LIMIT 1 RETURNING id::text, product_id::text",
            [buyer, f"{buyer}-key"],
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) VALUES (%s, %s)", [buyer, balance_cents]
        )
    ours = {
        **event["Records"][0],
        "messageId": "ours",
        "body": json.dumps({"order_id": order_id, "product_id": product_id}),
    }
    event["Records"].append(ours)
    return event, order_id


def _close_idle_event_loop() -> None:
    """Mangum sets up an event loop when a module is imported; close it (it is idle) so each
    test runs on a loop it owns and closes."""
    try:
        existing = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if not existing.is_closed() and not existing.is_running():
        existing.close()


@contextmanager
def installed_services(app: Starlette, settings: Settings) -> Iterator[Services]:
    """Point a function's module-level app at test settings, on a loop of its own as the
    Lambda runtime would give it."""
    _close_idle_event_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    services = Services.from_settings(settings)
    previous = app.state.services
    app.state.services = services
    try:
        yield services
    finally:
        app.state.services = previous
        loop.run_until_complete(services.aclose())
        loop.close()
        asyncio.set_event_loop(None)


@contextmanager
def function_handler(
    routes: Sequence[BaseRoute], settings: Settings, function: str
) -> Iterator[tuple[Callable[[dict[str, Any], Any], dict[str, Any]], Services]]:
    """A function's Lambda handler built as its module builds it (`build_app`, then
    `lambda_handler`) but on `settings`, on a loop of its own; closed afterwards."""
    _close_idle_event_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    services = Services.from_settings(settings)
    try:
        yield lambda_handler(build_app(routes, services=services), function), services
    finally:
        loop.run_until_complete(services.aclose())
        loop.close()
        asyncio.set_event_loop(None)


def body_of(response: dict[str, Any]) -> Any:
    """The JSON document, decoded as a client would (`text_of`)."""
    return json.loads(text_of(response))


def text_of(response: dict[str, Any]) -> str:
    """The body as a client reads it: base64 from API Gateway, then gzip when the response
    says `Content-Encoding: gzip`."""
    body: str | bytes = response.get("body", "")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body)
    if headers_of(response).get("content-encoding") == "gzip":
        body = gzip.decompress(body if isinstance(body, bytes) else body.encode())
    return body.decode() if isinstance(body, bytes) else body


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    for name, values in response.get("multiValueHeaders", {}).items():
        headers[name.lower()] = ", ".join(values)
    return headers


@contextmanager
def job_handler(job: Job, database_url: str) -> Iterator[LambdaHandler]:
    """A scheduled or queue function's Lambda handler on `database_url`, closed afterwards."""
    with job_handler_on(job, settings_for(database_url)) as handler:
        yield handler


@contextmanager
def job_handler_on(job: Job, settings: Settings) -> Iterator[LambdaHandler]:
    """A scheduled or queue function's Lambda handler on `settings`, closed afterwards."""
    runner = JobRunner(job, services=Services.from_settings(settings))
    try:
        yield runner.handler
    finally:
        runner.close()


def with_request(
    event: dict[str, Any], headers: dict[str, str], body: Any = None
) -> dict[str, Any]:
    event["headers"] = {**event.get("headers", {}), **headers}
    if "multiValueHeaders" in event:
        event["multiValueHeaders"] = {
            **event["multiValueHeaders"],
            **{k: [v] for k, v in headers.items()},
        }
    if body is not None:
        event["body"] = json.dumps(body)
        event["isBase64Encoded"] = False
    return event


def with_path(event: dict[str, Any], path: str) -> dict[str, Any]:
    if "rawPath" in event:
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
    else:
        event["path"] = path
    return event


def with_query(event: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    if event.get("version") == "2.0":
        event["rawQueryString"] = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        event["queryStringParameters"] = params
    else:
        event["queryStringParameters"] = params
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
    return event


def with_method(event: dict[str, Any], method: str) -> dict[str, Any]:
    if "rawPath" in event:
        event["requestContext"]["http"]["method"] = method
    else:
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    return event

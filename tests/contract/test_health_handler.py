"""The health Lambda handler answers real API Gateway v1 and v2 events like the gateway does."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import functions.health.app as health_function
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for, unused_port

EVENTS = Path(__file__).resolve().parent.parent / "events"


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda runtime's context object that code reads."""

    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    function_name: str = "HealthFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:HealthFunction"


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture
def lambda_services(module_database_url: str) -> Iterator[Services]:
    """Point the function's module-level app at the test database, on a loop of its own as
    the Lambda runtime would give it."""
    yield from _install_services(settings_for(module_database_url))


@pytest.fixture
def dead_database_services() -> Iterator[Services]:
    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    yield from _install_services(settings_for(dead, health_db_timeout_s=1.0))


def _install_services(settings: Any) -> Iterator[Services]:
    _close_idle_event_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    services = Services.from_settings(settings)
    previous = health_function.app.state.services
    health_function.app.state.services = services
    try:
        yield services
    finally:
        health_function.app.state.services = previous
        loop.run_until_complete(services.aclose())
        loop.close()
        asyncio.set_event_loop(None)


def _close_idle_event_loop() -> None:
    """Mangum sets up an event loop when the module is imported; close it (it is idle) so
    each test runs on a loop it owns and closes."""
    try:
        existing = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if not existing.is_closed() and not existing.is_running():
        existing.close()


def invoke(event_name: str) -> dict[str, Any]:
    response: dict[str, Any] = health_function.handler(load_event(event_name), FakeLambdaContext())
    return response


def body_of(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    for name, values in response.get("multiValueHeaders", {}).items():
        headers[name.lower()] = ", ".join(values)
    return headers


def gateway_status(services: Services, method: str, path: str) -> int:
    async def call() -> int:
        transport = httpx.ASGITransport(app=create_gateway(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.request(method, path)).status_code

    return asyncio.get_event_loop().run_until_complete(call())


@pytest.mark.parametrize(
    ("event_name", "method", "path", "status"),
    [
        ("apigw_v2_get_health.json", "GET", "/health", 200),
        ("apigw_v1_get_health.json", "GET", "/health", 200),
        ("apigw_v2_get_health_live.json", "GET", "/health/live", 200),
        ("apigw_v1_get_health_live.json", "GET", "/health/live", 200),
        ("apigw_v2_post_health.json", "POST", "/health", 405),
        ("apigw_v2_get_unknown.json", "GET", "/nope", 404),
    ],
)
def test_same_status_as_the_gateway(
    lambda_services: Services, event_name: str, method: str, path: str, status: int
) -> None:
    response = invoke(event_name)
    assert response["statusCode"] == status
    assert gateway_status(lambda_services, method, path) == status
    headers = headers_of(response)
    assert len(headers["x-request-id"]) == 32
    if status >= 400:
        assert headers["content-type"] == "application/problem+json"
        assert body_of(response)["request_id"] == headers["x-request-id"]


def test_health_body_from_lambda(lambda_services: Services) -> None:
    body = body_of(invoke("apigw_v2_get_health.json"))
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["ok"] is True


def test_warm_invocations_reuse_one_pool(lambda_services: Services) -> None:
    invoke("apigw_v2_get_health.json")
    pool = lambda_services.primary._pool
    invoke("apigw_v1_get_health.json")
    assert pool is not None and lambda_services.primary._pool is pool


@pytest.mark.parametrize("event_name", ["apigw_v2_get_health.json", "apigw_v1_get_health.json"])
def test_503_when_the_database_is_down(dead_database_services: Services, event_name: str) -> None:
    response = invoke(event_name)
    assert response["statusCode"] == 503
    assert body_of(response)["checks"]["database"]["ok"] is False
    assert gateway_status(dead_database_services, "GET", "/health") == 503


def test_lambda_request_id_is_logged(lambda_services: Services, captured_logs: Any) -> None:
    # The function's access log samples 1% of successes, but every error is logged.
    invoke("apigw_v2_get_unknown.json")
    (line,) = captured_logs.lines("request")
    assert line["aws_request_id"] == FakeLambdaContext.aws_request_id
    assert line["status"] == 404


def test_importing_a_function_needs_no_database() -> None:
    """Importing app.py opens no connection, even with an unreachable DATABASE_URL."""
    probe = (
        "import functions.health.app as f; "
        "assert f.app.state.services.primary._pool is None; print('imported')"
    )
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"

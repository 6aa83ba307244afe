"""The health Lambda handler answers real API Gateway v1 and v2 events like the gateway does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import functions.health.app as health_function
from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for, unused_port
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    load_event,
    with_path,
)


@pytest.fixture
def lambda_services(module_database_url: str) -> Iterator[Services]:
    with installed_services(health_function.app, settings_for(module_database_url)) as services:
        yield services


@pytest.fixture
def dead_database_services() -> Iterator[Services]:
    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    settings = settings_for(dead, health_db_timeout_s=1.0)
    with installed_services(health_function.app, settings) as services:
        yield services


def invoke(event_name: str) -> dict[str, Any]:
    response: dict[str, Any] = health_function.handler(load_event(event_name), FakeLambdaContext())
    return response


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


@pytest.mark.parametrize("event_name", ["apigw_v2_get_health.json", "apigw_v1_get_health.json"])
def test_the_openapi_document(lambda_services: Services, event_name: str) -> None:
    response = health_function.handler(
        with_path(load_event(event_name), "/openapi.json"), FakeLambdaContext()
    )
    assert response["statusCode"] == 200
    assert headers_of(response)["cache-control"] == "no-store"
    assert body_of(response)["openapi"] == "3.1.0"
    assert "/openapi.json" in body_of(response)["paths"]

"""Rate limiting through the app: headers, 429s, route groups and trusted client IPs."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from edgemart.appfactory import build_app
from edgemart.services import Services
from tests.conftest import settings_for
from tests.ratelimit_app import ROUTES

pytestmark = pytest.mark.anyio

OVERRIDES = (("search", 3, 60), ("store", 2, 60))


@pytest.fixture
def app() -> Iterator[Starlette]:
    services = Services.from_settings(
        settings_for(
            None,
            rate_limit_overrides=OVERRIDES,
            trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),),
        )
    )
    yield build_app(ROUTES, services=services)


async def client_for(app: Starlette, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(app, "203.0.113.7"):
        yield client


async def test_headers_on_every_limited_response_then_429(client: httpx.AsyncClient) -> None:
    responses = [await client.get("/marketplace/search") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    for response in responses:
        assert response.headers["ratelimit-policy"] == '"search";q=3;w=60'
    assert [r.headers["ratelimit"].split(";")[1] for r in responses] == ["r=2", "r=1", "r=0", "r=0"]
    limited = responses[3]
    assert limited.headers["content-type"] == "application/problem+json"
    body = limited.json()
    assert body["code"] == "rate_limited"
    assert body["request_id"] == limited.headers["x-request-id"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_unlimited_routes_have_no_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers


async def test_store_and_product_pages_share_one_quota(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.get("/stores/acme")).status_code,
        (await client.get("/products/1")).status_code,
        (await client.get("/stores/other")).status_code,
    ]
    assert statuses == [200, 200, 429]
    # PATCH /products/{id} is a listing write: a separate group, keyed by user.
    patch = await client.patch("/products/1")
    assert patch.status_code == 200
    assert patch.headers["ratelimit-policy"] == '"listings";q=30;w=60'


async def test_forged_forwarding_headers_from_an_untrusted_peer_get_no_fresh_quota(
    client: httpx.AsyncClient,
) -> None:
    statuses = []
    for index in range(5):
        forged = {"X-Forwarded-For": f"198.51.100.{index}", "CF-Connecting-IP": f"192.0.2.{index}"}
        statuses.append((await client.get("/marketplace/search", headers=forged)).status_code)
    assert statuses == [200, 200, 200, 429, 429]


async def test_trusted_proxy_headers_are_honoured(app: Starlette) -> None:
    async for proxy in client_for(app, "10.1.2.3"):
        for header in ("CF-Connecting-IP", "X-Forwarded-For", "CloudFront-Viewer-Address"):
            statuses = []
            for index in range(4):
                value = f"198.51.{len(header)}.{index}"
                if header == "CloudFront-Viewer-Address":
                    value += ":5555"
                statuses.append(
                    (await proxy.get("/marketplace/search", headers={header: value})).status_code
                )
            assert statuses == [200] * 4, header  # each client its own quota
        # One client behind the proxy is still limited.
        same = [
            (
                await proxy.get("/marketplace/search", headers={"CF-Connecting-IP": "192.0.2.99"})
            ).status_code
            for _ in range(4)
        ]
        assert same == [200, 200, 200, 429]


async def test_access_log_records_the_rate_limit_outcome(
    client: httpx.AsyncClient, captured_logs
) -> None:  # type: ignore[no-untyped-def]
    for _ in range(4):
        await client.get("/marketplace/search")
    limited = [line for line in captured_logs.lines("request") if line["status"] == 429]
    assert limited and limited[0]["rate_limit"] == "search:limited"

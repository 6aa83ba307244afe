"""CORS through the gateway, for the origins in CORS_ALLOW_ORIGINS and for every other."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.test_response_headers import gateway_for

pytestmark = pytest.mark.anyio

SHOP = "https://shop.example"
OTHER = "https://elsewhere.example"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.startswith("access-control-")]


def varies_on(response: httpx.Response) -> set[str]:
    return {value.strip().lower() for value in response.headers.get("vary", "").split(",")}


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # Each group admits one request a minute from this client: a preflight that counted
    # would turn the request after it into a 429.
    limits = tuple((group, 1, 60) for group in ("home", "purchases", "store"))
    async with gateway_for(
        catalog_database_url, cors_allow_origins=(SHOP,), rate_limit_overrides=limits
    ) as client:
        yield client


async def test_an_allowed_origins_preflight_is_answered(client: httpx.AsyncClient) -> None:
    response = await client.options("/purchases", headers=preflight(SHOP))
    assert response.status_code == 204
    assert response.content == b""
    headers = response.headers
    assert headers["access-control-allow-origin"] == SHOP
    assert headers["access-control-allow-methods"] == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert headers["access-control-allow-headers"] == (
        "Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-ID"
    )
    assert int(headers["access-control-max-age"]) > 0
    assert "origin" in varies_on(response)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-request-id"]


async def test_preflights_are_not_rate_limited(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await client.options("/marketplace/home", headers=preflight(SHOP, "GET"))
        assert response.status_code == 204
        assert "ratelimit" not in response.headers
    after = await client.get("/marketplace/home", headers={"Origin": SHOP})
    assert after.status_code == 200
    assert after.headers["ratelimit"].startswith('"home";r=0')


async def test_another_origins_preflight_is_not_answered_as_cors(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options("/marketplace/search", headers=preflight(OTHER, "GET"))
    assert response.status_code == 405
    assert cors_headers(response) == []
    assert response.headers["cache-control"] == "no-store"


async def test_an_allowed_origins_response_carries_cors_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/marketplace/search/popular", headers={"Origin": SHOP, "Accept-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SHOP
    exposed = {
        name.strip() for name in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "X-Request-ID",
        "ETag",
        "Idempotent-Replayed",
        "Location",
    }
    assert "access-control-allow-methods" not in response.headers
    assert varies_on(response) == {"accept-encoding", "origin"}


async def test_another_origin_gets_no_cors_headers_but_the_response_varies(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({"Origin": OTHER}, {}):
        response = await client.get("/marketplace/search/popular", headers=headers)
        assert response.status_code == 200
        assert cors_headers(response) == []
        assert "origin" in varies_on(response)


async def test_refusals_to_an_allowed_origin_are_readable_and_not_stored(
    client: httpx.AsyncClient,
) -> None:
    origin = {"Origin": SHOP}
    assert (await client.get("/stores/some-store", headers=origin)).status_code == 404
    refused = await client.get("/stores/some-store", headers=origin)
    missing = await client.get("/no/such/path", headers=origin)
    assert (refused.status_code, missing.status_code) == (429, 404)
    for response in (refused, missing):
        assert response.headers["access-control-allow-origin"] == SHOP
        assert response.headers["cache-control"] == "no-store"
    assert "Retry-After" in refused.headers["access-control-expose-headers"]
    assert refused.headers["retry-after"]


async def test_with_cors_off_a_preflight_stays_405(catalog_database_url: str) -> None:
    async with gateway_for(catalog_database_url) as client:
        response = await client.options("/purchases", headers=preflight(SHOP))
    assert response.status_code == 405
    assert cors_headers(response) == []
    assert "origin" not in varies_on(response)

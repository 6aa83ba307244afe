"""Response headers through the gateway: refusals are never cacheable, nothing is sniffed,
and the cacheable documents go out gzipped to clients that accept it."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for, unused_port
from tests.support.tokens import SECRET, auth

pytestmark = pytest.mark.anyio

PLAIN = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}


def gateway_for(
    database_url: str, **overrides: object
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    services = Services.from_settings(settings_for(database_url, jwt_secret=SECRET, **overrides))
    return open_gateway(services, peer=("203.0.113.30", 1))


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    unlimited = tuple((group, 0, 60) for group in ("home", "search", "store", "purchases"))
    async with gateway_for(catalog_database_url, rate_limit_overrides=unlimited) as client:
        yield client


def assert_never_stored(response: httpx.Response) -> None:
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_refusals_from_every_producer_are_no_store(client: httpx.AsyncClient) -> None:
    buyer = auth("buyer-1")
    refusals = {
        "router 404": await client.get("/nope"),
        "router 405": await client.post("/marketplace/home"),
        "body limit 413": await client.post("/purchases", content=b"x" * 70_000, headers=buyer),
        "route 401": await client.post("/purchases", json={}),
        "route 422": await client.get("/marketplace/search", params={"bogus": "1"}),
        "cached route 404": await client.get(f"/products/{uuid.uuid4()}"),
        "store 404": await client.get("/stores/no-such-store"),
    }
    statuses = {name: response.status_code for name, response in refusals.items()}
    assert statuses == {
        "router 404": 404,
        "router 405": 405,
        "body limit 413": 413,
        "route 401": 401,
        "route 422": 422,
        "cached route 404": 404,
        "store 404": 404,
    }
    for response in refusals.values():
        assert_never_stored(response)


async def test_the_rate_limiters_429_is_no_store(catalog_database_url: str) -> None:
    async with gateway_for(catalog_database_url, rate_limit_overrides=(("home", 1, 60),)) as client:
        assert (await client.get("/marketplace/home")).status_code == 200
        refused = await client.get("/marketplace/home")
    assert refused.status_code == 429
    assert_never_stored(refused)


async def test_a_database_outage_503_is_no_store() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres"
    async with gateway_for(dead, db_pool_timeout_s=0.5) as client:
        response = await client.get("/marketplace/home")
    assert response.status_code == 503
    assert_never_stored(response)


async def test_a_cacheable_page_keeps_its_cache_control(client: httpx.AsyncClient) -> None:
    response = await client.get("/marketplace/home", headers=PLAIN)
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public, max-age=0, s-maxage=60")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in response.headers


async def test_home_is_gzipped_for_a_client_that_accepts_it(client: httpx.AsyncClient) -> None:
    plain = await client.get("/marketplace/home", headers=PLAIN)
    async with client.stream("GET", "/marketplace/home", headers=GZIP) as compressed:
        raw = b"".join([chunk async for chunk in compressed.aiter_raw()])
    assert compressed.status_code == 200
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(raw) == plain.content
    assert int(compressed.headers["content-length"]) == len(raw) < len(plain.content) // 3
    assert compressed.headers["etag"] != plain.headers["etag"]
    assert compressed.headers["etag"].startswith('"')


async def test_304_still_works_for_each_representation(client: httpx.AsyncClient) -> None:
    plain = await client.get("/marketplace/home", headers=PLAIN)
    compressed = await client.get("/marketplace/home", headers=GZIP)
    for headers, etag in ((GZIP, compressed.headers["etag"]), (PLAIN, plain.headers["etag"])):
        revalidated = await client.get(
            "/marketplace/home", headers={**headers, "If-None-Match": etag}
        )
        assert revalidated.status_code == 304
        assert revalidated.content == b""
        assert revalidated.headers["etag"] == etag
        assert revalidated.headers["vary"] == "Accept-Encoding"
        assert "content-encoding" not in revalidated.headers
    # A tag of the other representation does not validate this one.
    crossed = await client.get(
        "/marketplace/home", headers={**GZIP, "If-None-Match": plain.headers["etag"]}
    )
    assert crossed.status_code == 200 and crossed.headers["content-encoding"] == "gzip"


async def test_a_small_document_is_not_compressed(client: httpx.AsyncClient) -> None:
    response = await client.get("/marketplace/search/popular", headers=GZIP)
    assert response.status_code == 200
    assert len(response.content) < 1024
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


async def test_a_refusal_is_never_compressed(client: httpx.AsyncClient) -> None:
    response = await client.get("/marketplace/search", params={"bogus": "1"}, headers=GZIP)
    assert response.status_code == 422
    assert "content-encoding" not in response.headers

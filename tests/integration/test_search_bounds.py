"""Every search's work is bounded: a query of excluded words only is refused, and a search
that runs past SEARCH_STATEMENT_TIMEOUT_MS is a 503 that does not trip the circuit breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def bounded(catalog_database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    settings = settings_for(
        catalog_database_url,
        cursor_secret="s",
        search_statement_timeout_ms=300,
        circuit_failure_threshold=2,
        rate_limit_overrides=(("search", 0, 60),),
    )
    services = Services.from_settings(settings)
    transport = httpx.ASGITransport(app=create_gateway(services), client=("203.0.113.50", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, services
    await services.aclose()


@pytest.mark.parametrize(
    "q", ["-lamp -chair -oak", "-lamp", "the -lamp", "lamp or -chair", "-lamp or -oak"]
)
async def test_excluded_words_alone_are_refused(
    bounded: tuple[httpx.AsyncClient, Services], q: str
) -> None:
    client, _ = bounded
    for sort in ("relevance", "newest", "price_asc"):
        response = await client.get("/marketplace/search", params={"q": q, "sort": sort})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == ["q"]


@pytest.mark.parametrize("q", ["lamp -chair", "t-shirt", "oak -", "lamp"])
async def test_queries_with_a_word_to_find_run(
    bounded: tuple[httpx.AsyncClient, Services], q: str
) -> None:
    client, _ = bounded
    response = await client.get("/marketplace/search", params={"q": q})
    assert response.status_code == 200, response.text


async def test_a_search_past_its_timeout_is_503_and_spares_the_breaker(
    bounded: tuple[httpx.AsyncClient, Services], catalog_database_url: str
) -> None:
    client, services = bounded
    # A lock the search must wait for makes it outlast its timeout deterministically.
    async with await psycopg.AsyncConnection.connect(catalog_database_url) as blocker:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            responses = [
                await client.get("/marketplace/search", params={"q": f"oak chair {index}"})
                for index in range(4)
            ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "search_timeout"
        assert response.headers["retry-after"] == "5"
        assert response.headers["cache-control"] == "no-store"
    breaker = services.replica.breaker
    assert breaker is not None and breaker.state == "closed"
    after = await client.get("/marketplace/search", params={"q": "oak chair"})
    assert after.status_code == 200

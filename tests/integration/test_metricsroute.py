"""`GET /metrics` on the gateway: Prometheus text of what this process recorded, never cached
or rate limited, behind `METRICS_BEARER_TOKEN` when it is set, and not part of the API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgemart.metrics import TABLE
from edgemart.openapi import document
from edgemart.ratelimit.groups import DEFAULT_POLICIES
from edgemart.routetable import ROUTES
from edgemart.services import Services
from gateway.metricsroute import MISSING_TOKEN, WRONG_TOKEN, check_bearer
from gateway.prometheus import prometheus_name
from tests.conftest import open_gateway, settings_for

pytestmark = pytest.mark.anyio

TOKEN = "scrape-me-7f3a"


@pytest.fixture
async def client(module_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # Every group limited to one request a minute: /metrics must not care.
    settings = settings_for(
        module_database_url,
        metrics_bearer_token=TOKEN,
        rate_limit_overrides=tuple((group, 1, 60) for group in DEFAULT_POLICIES),
    )
    async with open_gateway(Services.from_settings(settings), peer=("203.0.113.9", 1)) as client:
        yield client


def authorized(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def requests_of(text: str, route_group: str, status_class: str) -> float:
    """The `requests` a scrape counts in one route group and status class."""
    for family in text_string_to_metric_families(text):
        if family.name == "edgemart_requests":
            return sum(
                s.value
                for s in family.samples
                if s.labels == {"route_group": route_group, "status_class": status_class}
            )
    raise AssertionError("no edgemart_requests family")


def health_requests(text: str) -> float:
    return requests_of(text, "health", "2xx")


async def test_metrics_are_prometheus_text_of_every_declared_metric(
    client: httpx.AsyncClient,
) -> None:
    before = health_requests((await client.get("/metrics", headers=authorized())).text)
    for _ in range(3):
        assert (await client.get("/health/live")).status_code == 200

    response = await client.get("/metrics", headers=authorized())

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert names == {prometheus_name(metric) for metric in TABLE.values()}
    assert health_requests(response.text) == before + 3


async def test_the_gateways_own_routes_are_counted_in_their_own_group(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.get("/metrics", headers=authorized())).text
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/no/such/page")).status_code == 404

    text = (await client.get("/metrics", headers=authorized())).text

    # The first scrape is counted once it was answered, so it is in the second one's counts.
    assert requests_of(text, "gateway", "2xx") == requests_of(first, "gateway", "2xx") + 2
    assert requests_of(text, "gateway", "4xx") == requests_of(first, "gateway", "4xx") + 1
    assert requests_of(text, "unmatched", "4xx") == requests_of(first, "unmatched", "4xx") + 1


async def test_openmetrics_for_a_scraper_that_asks(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics",
        headers={**authorized(), "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, MISSING_TOKEN),
        ("Bearer", MISSING_TOKEN),
        (f"Basic {TOKEN}", MISSING_TOKEN),
        ("Bearer not-the-token", WRONG_TOKEN),
        (f"Bearer {TOKEN}x", WRONG_TOKEN),
    ],
)
async def test_without_the_token_a_scrape_is_401(
    client: httpx.AsyncClient, authorization: str | None, detail: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="edgemart"'
    assert response.headers["cache-control"] == "no-store"
    problem = response.json()
    assert (problem["code"], problem["detail"]) == ("unauthorized", detail)
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "edgemart_" not in response.text


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


async def test_scrapes_are_not_rate_limited(client: httpx.AsyncClient) -> None:
    limited = await client.get("/marketplace/search", params={"q": "lamp"})
    limited_again = await client.get("/marketplace/search", params={"q": "lamp"})
    assert (limited.status_code, limited_again.status_code) != (200, 200)  # the limit holds
    for _ in range(5):
        response = await client.get("/metrics", headers=authorized())
        assert response.status_code == 200
        assert "ratelimit" not in response.headers


async def test_only_get_and_head(client: httpx.AsyncClient) -> None:
    response = await client.post("/metrics", headers=authorized())
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_without_a_token_setting_anyone_may_scrape(module_database_url: str) -> None:
    async with open_gateway(Services.from_settings(settings_for(module_database_url))) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200


def test_the_bearer_check() -> None:
    check_bearer(None, None)
    check_bearer("anything", None)
    check_bearer(f"Bearer {TOKEN}", TOKEN)
    check_bearer(f"  BEARER   {TOKEN} ", TOKEN)
    for wrong in (None, "", "Bearer ", f"Token {TOKEN}", f"Bearer {TOKEN[:-1]}", TOKEN):
        with pytest.raises(Exception) as raised:
            check_bearer(wrong, TOKEN)
        assert getattr(raised.value, "status", None) == 401


def test_metrics_are_not_part_of_the_api() -> None:
    assert not any(route.path == "/metrics" for route in ROUTES)
    assert "/metrics" not in document()["paths"]

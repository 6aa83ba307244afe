"""Home and search Lambda handlers answer real API Gateway v1/v2 events like the gateway."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
import redis

import functions.home.app as home_function
import functions.search.app as search_function
import functions.store.app as store_function
from edgemart.counters import SEARCH_COUNTS_KEY
from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from tests.conftest import RedisProcess, settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    load_event,
    with_path,
    with_query,
)


@pytest.mark.parametrize("event", ["apigw_v2_get_home.json", "apigw_v1_get_home.json"])
def test_home(home_services: Services, event: str) -> None:
    response = home_function.handler(load_event(event), FakeLambdaContext())
    assert response["statusCode"] == 200
    headers = headers_of(response)
    assert headers["cache-control"].startswith("public, max-age=0, s-maxage=60")
    assert headers["etag"].startswith('"')
    assert len(body_of(response)["hot"]) == 10


@pytest.mark.parametrize("event", ["apigw_v2_get_search.json", "apigw_v1_get_search.json"])
def test_search(search_services: Services, event: str) -> None:
    response = search_function.handler(load_event(event), FakeLambdaContext())
    assert response["statusCode"] == 200
    body = body_of(response)
    prices = [product["price_cents"] for product in body["results"]]
    assert len(prices) == 5 and prices == sorted(prices)
    assert body["next_cursor"]


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("apigw_v2_get_search_bad_query.json", {"parameter1", "parameter2"}),
        # `q` is missing too, but "q or category" spans two parameters: the handler says so
        # once the route table's own checks pass, and this one names an unknown parameter.
        ("apigw_v1_get_search_bad_query.json", {"foo"}),
    ],
)
def test_search_rejects_the_sample_query(
    search_services: Services, event: str, fields: set[str]
) -> None:
    response = search_function.handler(load_event(event), FakeLambdaContext())
    assert response["statusCode"] == 422
    assert headers_of(response)["content-type"] == "application/problem+json"
    assert {error["field"] for error in body_of(response)["errors"]} == fields


@pytest.mark.parametrize(
    "event", ["apigw_v2_get_store_unknown.json", "apigw_v1_get_store_unknown.json"]
)
def test_store_page(store_services: Services, catalog_database_url: str, event: str) -> None:
    missing = store_function.handler(load_event(event), FakeLambdaContext())
    assert missing["statusCode"] == 404
    assert body_of(missing)["code"] == "store_not_found"
    with psycopg.connect(catalog_database_url) as conn:
        row = conn.execute("SELECT slug FROM stores ORDER BY slug LIMIT 1").fetchone()
    assert row is not None
    found = store_function.handler(
        with_path(load_event(event), f"/stores/{row[0]}"), FakeLambdaContext()
    )
    assert found["statusCode"] == 200
    assert body_of(found)["store"]["slug"] == row[0]


@pytest.mark.parametrize("event", ["apigw_v2_post_home.json", "apigw_v1_post_home.json"])
def test_home_wrong_method(home_services: Services, event: str) -> None:
    response = home_function.handler(load_event(event), FakeLambdaContext())
    assert response["statusCode"] == 405
    assert body_of(response)["code"] == "method_not_allowed"
    assert headers_of(response)["allow"] == "GET, HEAD"


def from_address(event: dict[str, Any], address: str) -> dict[str, Any]:
    if event.get("version") == "2.0":
        event["requestContext"]["http"]["sourceIp"] = address
    else:
        event["requestContext"]["identity"]["sourceIp"] = address
    return event


@pytest.mark.parametrize(("version", "q"), [("v1", "oak"), ("v2", "chair")])
def test_popular_searches_count_clients_through_the_handler(
    catalog_database_url: str, version: str, q: str
) -> None:
    """A query searched 5 times from one address and once each from two more counts three
    clients: listed at a threshold of 3, not at 4. Refused and empty searches count nothing."""
    settings = settings_for(catalog_database_url, cursor_secret="s", popular_search_min_clients=3)
    with installed_services(search_function.app, settings) as services:
        for address in ["198.51.100.1"] * 5 + ["198.51.100.2", "198.51.100.3"]:
            event = from_address(
                with_query(load_event(f"apigw_{version}_get_search.json"), {"q": q}), address
            )
            assert search_function.handler(event, FakeLambdaContext())["statusCode"] == 200
        for params in ({"q": "zzqxnothing"}, {"q": q + "\x00"}):
            event = with_query(load_event(f"apigw_{version}_get_search.json"), params)
            search_function.handler(event, FakeLambdaContext())
        loop = asyncio.get_event_loop()
        report = loop.run_until_complete(
            refresh_views(services, load_event("eventbridge_scheduled.json"))
        )
        assert report["failed_steps"] == []
        popular = with_path(
            load_event(f"apigw_{version}_get_search.json"), "/marketplace/search/popular"
        )
        popular = with_query(popular, {})
        listed = {
            entry["query"]: entry["count"]
            for entry in body_of(search_function.handler(popular, FakeLambdaContext()))["searches"]
        }
    assert listed.get(q) == 3
    assert "zzqxnothing" not in listed


def test_searches_reach_redis_by_the_end_of_the_invocation(
    catalog_database_url: str, own_redis: RedisProcess
) -> None:
    """In Lambda the counts are written when the invocation ends, before the environment may
    be frozen: nothing waits for a flusher that a frozen loop would not run."""
    settings = settings_for(catalog_database_url, cursor_secret="s", redis_url=own_redis.url)
    with installed_services(search_function.app, settings):
        event = with_query(load_event("apigw_v2_get_search.json"), {"q": "oak"})
        assert search_function.handler(event, FakeLambdaContext())["statusCode"] == 200
        stored = redis.Redis.from_url(own_redis.url).hgetall(SEARCH_COUNTS_KEY)
    assert [(json.loads(name)[0], count) for name, count in stored.items()] == [("oak", b"1")]

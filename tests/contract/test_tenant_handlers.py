"""Multi mode in the Lambda handlers, with real API Gateway event JSON: the tenant is resolved
on the same code path as in the gateway, from the event's `Host` header (or, for an event
without one, the API's domain in its request context)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import psycopg
import pytest

import functions.health.app as health_function
import functions.home.app as home_function
import functions.purchase.app as purchase_function
from edgemart.settings import Settings
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    function_handler,
    headers_of,
    load_event,
    with_path,
    with_request,
)

SECRET = "tenant-contract-secret-of-at-least-32-bytes"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
V2_API_DOMAIN = "id.execute-api.us-east-1.amazonaws.com"
"""The sample v2 event's `requestContext.domainName`; the event has no `Host` header."""


@pytest.fixture(scope="module")
def shop_database_url(module_database_url: str) -> str:
    """This module's database with tenant `shop` owning `shop.test`."""
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        tenant = uuid.uuid4()
        conn.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'shop', 'Shop')", [tenant])
        conn.execute(
            "INSERT INTO tenant_domains (domain, tenant_id) VALUES ('shop.test', %s)", [tenant]
        )
    return module_database_url


def multi(database_url: str) -> Settings:
    return settings_for(database_url, tenancy="multi", jwt_secret=SECRET)


@pytest.fixture
def home(shop_database_url: str) -> Iterator[Handler]:
    with function_handler(home_function.routes, multi(shop_database_url), "home") as (handler, _):
        yield handler


def bearer(**claims: Any) -> str:
    claims = {"sub": "buyer", "exp": int(time.time()) + 600, **claims}
    return "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize("name", ["apigw_v2_get_home.json", "apigw_v1_get_home.json"])
def test_a_known_host_is_served_and_an_unknown_one_is_404(home: Handler, name: str) -> None:
    known = home(with_request(load_event(name), {"Host": "Shop.test"}), FakeLambdaContext())
    assert known["statusCode"] == 200, known
    # The sample's own Host (v1: an execute-api domain) or, with none, its API domain (v2):
    # no tenant owns either.
    unknown = home(load_event(name), FakeLambdaContext())
    assert unknown["statusCode"] == 404
    assert headers_of(unknown)["content-type"] == "application/problem+json"
    assert headers_of(unknown)["cache-control"] == "no-store"
    assert body_of(unknown)["code"] == "tenant_not_found"


def test_a_v2_event_without_host_is_the_tenant_of_its_api_domain(
    home: Handler, shop_database_url: str
) -> None:
    event = load_event("apigw_v2_get_home.json")
    assert "host" not in {name.lower() for name in event["headers"]}
    assert event["requestContext"]["domainName"] == V2_API_DOMAIN
    with psycopg.connect(shop_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_domains (domain, tenant_id) "
            "SELECT %s, id FROM tenants WHERE slug = 'shop'",
            [V2_API_DOMAIN],
        )
    try:
        assert home(event, FakeLambdaContext())["statusCode"] == 200
    finally:
        with psycopg.connect(shop_database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM tenant_domains WHERE domain = %s", [V2_API_DOMAIN])


@pytest.mark.parametrize("name", ["apigw_v2_get_health.json", "apigw_v1_get_health.json"])
def test_health_answers_on_any_host(shop_database_url: str, name: str) -> None:
    settings = multi(shop_database_url)
    with function_handler(health_function.routes, settings, "health") as (handler, _):
        response = handler(load_event(name), FakeLambdaContext())
    assert response["statusCode"] == 200, response


@pytest.mark.parametrize("name", ["apigw_v2_get_home.json", "apigw_v1_get_home.json"])
def test_a_token_of_another_tenant_is_403(shop_database_url: str, name: str) -> None:
    settings = multi(shop_database_url)
    with function_handler(purchase_function.routes, settings, "purchase") as (handler, _):

        def wallet(authorization: str) -> dict[str, Any]:
            event = with_path(load_event(name), "/wallet")
            event = with_request(event, {"Host": "shop.test", "Authorization": authorization})
            return handler(event, FakeLambdaContext())

        assert wallet(bearer(org_id="shop"))["statusCode"] == 200
        for refused in (bearer(org_id="default"), bearer(), bearer(roles=["platform_admin"])):
            response = wallet(refused)
            assert response["statusCode"] == 403
            assert body_of(response)["code"] == "tenant_mismatch"

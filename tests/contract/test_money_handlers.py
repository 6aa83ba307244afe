"""Purchase, admin and maintenance handlers with real API Gateway / EventBridge events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import functions.admin.app as admin_function
import functions.purchase.app as purchase_function
from edgemart.services import Services
from functions.maintenance.app import maintenance
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    job_handler,
    load_event,
    with_path,
    with_query,
    with_request,
)
from tests.support.purchases import fund, new_product, place_orders, store_owner
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth

POST_EVENTS = ["apigw_v2_post_purchases.json", "apigw_v1_post_purchases.json"]
GET_EVENTS = ["apigw_v2_get_admin_switch.json", "apigw_v1_get_admin_switch.json"]
ADMIN = auth("root", roles=["admin"])


def with_method(event: dict[str, Any], method: str) -> dict[str, Any]:
    """The event as API Gateway sends it for another HTTP method."""
    if "requestContext" in event and "http" in event["requestContext"]:
        event["requestContext"]["http"]["method"] = method
    else:
        event["httpMethod"] = method
    return event


def get(event: str, path: str, query: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
    return with_request(with_query(with_path(load_event(event), path), query), headers)


@pytest.fixture
def euro_admin(catalog_database_url: str) -> Iterator[Services]:
    """The admin function of a marketplace that sells in euros."""
    settings = settings_for(catalog_database_url, jwt_secret=SECRET, marketplace_currency="EUR")
    with installed_services(admin_function.app, settings) as services:
        yield services


@pytest.fixture
def euro_purchases(catalog_database_url: str) -> Iterator[Services]:
    """The purchase function of a marketplace that sells in euros."""
    settings = settings_for(catalog_database_url, jwt_secret=SECRET, marketplace_currency="EUR")
    with installed_services(purchase_function.app, settings) as services:
        yield services


@pytest.mark.parametrize("event", ["apigw_v2_post_purchases.json", "apigw_v1_post_purchases.json"])
def test_purchase(purchase_services: Services, catalog_database_url: str, event: str) -> None:
    product = new_product(catalog_database_url, stock=3)
    fund(catalog_database_url, "lambda-buyer", 10_000)
    key = uuid.uuid4().hex
    request = with_request(
        load_event(event),
        {**auth("lambda-buyer"), "Idempotency-Key": key, "Content-Type": "application/json"},
        {"product_id": product, "quantity": 1},
    )
    placed = purchase_function.handler(request, FakeLambdaContext())
    assert placed["statusCode"] == 201, placed
    replayed = purchase_function.handler(request, FakeLambdaContext())
    assert replayed["statusCode"] == 201
    assert replayed["body"] == placed["body"]
    first, again = headers_of(placed), headers_of(replayed)
    assert first["location"] == again["location"] == f"/purchases/{body_of(placed)['id']}"
    assert first["cache-control"] == again["cache-control"] == "no-store"
    assert again["idempotent-replayed"] == "true" and "idempotent-replayed" not in first
    assert again["original-request-id"] == first["x-request-id"] != again["x-request-id"]
    anonymous = purchase_function.handler(load_event(event), FakeLambdaContext())
    assert anonymous["statusCode"] == 401 and body_of(anonymous)["code"] == "unauthorized"


@pytest.mark.parametrize("event", POST_EVENTS)
def test_a_refusal_replays_with_the_original_request_id(
    purchase_services: Services, catalog_database_url: str, event: str
) -> None:
    """A 409 replay: the original problem body, its request_id the first request's, under the
    retry's own X-Request-ID."""
    owner = store_owner(catalog_database_url)
    request = with_request(
        load_event(event),
        {**auth(owner), "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
        {"product_id": new_product(catalog_database_url, stock=3), "quantity": 1},
    )
    refused = purchase_function.handler(request, FakeLambdaContext())
    replayed = purchase_function.handler(request, FakeLambdaContext())
    assert refused["statusCode"] == replayed["statusCode"] == 409, refused
    assert replayed["body"] == refused["body"]
    first, again = headers_of(refused), headers_of(replayed)
    assert body_of(replayed)["request_id"] == first["x-request-id"] != again["x-request-id"]
    assert again["original-request-id"] == first["x-request-id"]
    assert again["idempotent-replayed"] == "true"


@pytest.mark.parametrize("event", GET_EVENTS)
def test_list_purchases(purchase_services: Services, catalog_database_url: str, event: str) -> None:
    """GET /purchases through the handler: the caller's orders newest first, a page at a time,
    the cursor carried in the query string; a forged cursor or an unknown parameter is 422."""
    user = f"lister-{uuid.uuid4().hex[:6]}"
    ids = place_orders(catalog_database_url, user, ["2024-05-01T10:00:00Z"] * 3)
    listed: list[str] = []
    query = {"limit": "2"}
    for _ in range(3):
        page = purchase_function.handler(
            get(event, "/purchases", query, auth(user)), FakeLambdaContext()
        )
        assert page["statusCode"] == 200, page
        assert headers_of(page)["cache-control"] == "no-store"
        document = body_of(page)
        listed += [order["id"] for order in document["orders"]]
        if document["next_cursor"] is None:
            break
        query = {"limit": "2", "cursor": document["next_cursor"]}
    assert listed == sorted(ids, reverse=True)  # one instant: by id, descending
    for query in ({"cursor": "forged.cursor"}, {"limit": "2", "sort": "old"}):
        refused = purchase_function.handler(
            get(event, "/purchases", query, auth(user)), FakeLambdaContext()
        )
        assert refused["statusCode"] == 422 and body_of(refused)["code"] == "validation_error"


@pytest.mark.parametrize("event", POST_EVENTS)
def test_a_retried_credit_credits_once(
    admin_services: Services, catalog_database_url: str, event: str
) -> None:
    sub = f"lambda-credit-{uuid.uuid4().hex[:6]}"
    request = with_request(
        with_path(load_event(event), f"/admin/wallets/{sub}/credits"),
        {**ADMIN, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
        {"amount_cents": 300, "reason": "goodwill"},
    )
    credited = admin_function.handler(request, FakeLambdaContext())
    replayed = admin_function.handler(request, FakeLambdaContext())
    assert credited["statusCode"] == replayed["statusCode"] == 200, credited
    assert body_of(credited) == {"sub": sub, "balance_cents": 300}
    assert replayed["body"] == credited["body"]
    first, again = headers_of(credited), headers_of(replayed)
    assert again["idempotent-replayed"] == "true"
    assert again["original-request-id"] == first["x-request-id"]
    assert first["cache-control"] == again["cache-control"] == "no-store"
    url = catalog_database_url
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", sub) == [(300,)]
    unkeyed = with_request(
        with_path(load_event(event), f"/admin/wallets/{sub}/credits"),
        {**ADMIN, "Content-Type": "application/json"},
        {"amount_cents": 300},
    )
    refused = admin_function.handler(unkeyed, FakeLambdaContext())
    assert refused["statusCode"] == 400
    assert body_of(refused)["code"] == "idempotency_key_required"


@pytest.mark.parametrize("event", GET_EVENTS)
def test_list_kill_switches(admin_services: Services, event: str) -> None:
    listed = admin_function.handler(
        get(event, "/admin/kill-switches", {}, ADMIN), FakeLambdaContext()
    )
    assert listed["statusCode"] == 200, listed
    assert headers_of(listed)["cache-control"] == "no-store"
    switches = body_of(listed)["kill_switches"]
    assert [switch["name"] for switch in switches] == ["listings", "purchases"]
    single = admin_function.handler(
        get(event, "/admin/kill-switches/purchases", {}, ADMIN), FakeLambdaContext()
    )
    assert body_of(single) == switches[1]


@pytest.mark.parametrize("event", POST_EVENTS)
def test_queued_mode_needs_a_queue(
    admin_services: Services, catalog_database_url: str, event: str
) -> None:
    """The admin function without PURCHASE_QUEUE_URL refuses queued mode, changing nothing."""
    product = new_product(catalog_database_url, stock=3)
    request = with_request(
        with_method(
            with_path(load_event(event), f"/admin/products/{product}/purchase-mode"), "PUT"
        ),
        {**ADMIN, "Content-Type": "application/json"},
        {"mode": "queued"},
    )
    refused = admin_function.handler(request, FakeLambdaContext())
    assert refused["statusCode"] == 409, refused
    assert body_of(refused)["code"] == "queued_mode_unavailable"
    assert headers_of(refused)["cache-control"] == "no-store"
    assert sql(
        catalog_database_url, "SELECT purchase_mode FROM products WHERE id = %s", product
    ) == [("direct",)]
    assert sql(
        catalog_database_url, "SELECT count(*) FROM audit_log WHERE entity_id = %s", product
    ) == [(0,)]


@pytest.mark.parametrize("event", POST_EVENTS)
def test_a_credited_wallet_is_in_the_marketplace_currency(
    euro_admin: Services, catalog_database_url: str, event: str
) -> None:
    """The POST event, sent to the credit route: a wallet the admin function creates is in the
    marketplace's currency, not the column's default."""
    sub = f"euro-{uuid.uuid4().hex[:8]}"
    request = with_request(
        with_path(load_event(event), f"/admin/wallets/{sub}/credits"),
        {**ADMIN, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
        {"amount_cents": 5000},
    )
    credited = admin_function.handler(request, FakeLambdaContext())
    assert credited["statusCode"] == 200, credited
    assert body_of(credited) == {"sub": sub, "balance_cents": 5000}
    assert sql(
        catalog_database_url, "SELECT currency, balance_cents FROM wallets WHERE user_sub = %s", sub
    ) == [("EUR", 5000)]


@pytest.mark.parametrize("event", ["apigw_v2_post_purchases.json", "apigw_v1_post_purchases.json"])
def test_purchases_are_in_the_marketplace_currency(
    euro_purchases: Services, catalog_database_url: str, event: str
) -> None:
    """The purchase function sells only products listed in the marketplace's currency (another
    one is 404, as unavailable) and records it on the order."""
    url = catalog_database_url
    fund(url, "euro-buyer", 10_000)
    outcomes = {}
    for currency in ("EUR", "USD"):
        product = new_product(url, stock=3, currency=currency)
        request = with_request(
            load_event(event),
            {
                **auth("euro-buyer"),
                "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": "application/json",
            },
            {"product_id": product, "quantity": 1},
        )
        outcomes[currency] = purchase_function.handler(request, FakeLambdaContext())
    assert outcomes["EUR"]["statusCode"] == 201, outcomes["EUR"]
    order = body_of(outcomes["EUR"])["id"]
    assert sql(url, "SELECT currency FROM orders WHERE id = %s", order) == [("EUR",)]
    assert outcomes["USD"]["statusCode"] == 404
    assert body_of(outcomes["USD"])["code"] == "product_not_found"


@pytest.mark.parametrize(
    "event", ["apigw_v2_get_admin_switch.json", "apigw_v1_get_admin_switch.json"]
)
def test_admin_switch(admin_services: Services, event: str) -> None:
    ok = admin_function.handler(
        with_request(load_event(event), auth("root", roles=["admin"])), FakeLambdaContext()
    )
    assert ok["statusCode"] == 200 and body_of(ok)["name"] == "purchases"
    denied = admin_function.handler(
        with_request(load_event(event), auth("someone")), FakeLambdaContext()
    )
    assert denied["statusCode"] == 403


def test_maintenance_handler(catalog_database_url: str) -> None:
    with job_handler(maintenance, catalog_database_url) as handler:
        report = handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
    assert set(report) == {"partitions_created", "partitions_dropped", "search_history_trimmed"}

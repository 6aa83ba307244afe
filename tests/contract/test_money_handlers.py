"""Purchase, admin and maintenance handlers with real API Gateway / EventBridge events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import functions.admin.app as admin_function
import functions.purchase.app as purchase_function
from edgemart.services import Services
from functions.maintenance.app import maintenance
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    installed_services,
    job_handler,
    load_event,
    with_path,
    with_request,
)
from tests.integration.test_purchase import SECRET, auth, fund, new_product, sql


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
    assert body_of(replayed) == body_of(placed)
    anonymous = purchase_function.handler(load_event(event), FakeLambdaContext())
    assert anonymous["statusCode"] == 401 and body_of(anonymous)["code"] == "unauthorized"


@pytest.mark.parametrize("event", ["apigw_v2_post_purchases.json", "apigw_v1_post_purchases.json"])
def test_a_credited_wallet_is_in_the_marketplace_currency(
    euro_admin: Services, catalog_database_url: str, event: str
) -> None:
    """The POST event, sent to the credit route: a wallet the admin function creates is in the
    marketplace's currency, not the column's default."""
    sub = f"euro-{uuid.uuid4().hex[:8]}"
    request = with_request(
        with_path(load_event(event), f"/admin/wallets/{sub}/credits"),
        {**auth("root", roles=["admin"]), "Content-Type": "application/json"},
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
        report = handler(load_event("eventbridge_scheduled.json"), None)
    assert set(report) == {"partitions_created", "partitions_dropped", "search_history_trimmed"}

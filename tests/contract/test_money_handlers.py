"""Purchase, admin and maintenance handlers with real API Gateway / EventBridge events."""

from __future__ import annotations

import json
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
    installed_services,
    job_handler,
    load_event,
)
from tests.integration.test_purchase import SECRET, auth, fund, new_product


def with_request(
    event: dict[str, Any], headers: dict[str, str], body: Any = None
) -> dict[str, Any]:
    event["headers"] = {**event.get("headers", {}), **headers}
    if "multiValueHeaders" in event:
        event["multiValueHeaders"] = {
            **event["multiValueHeaders"],
            **{k: [v] for k, v in headers.items()},
        }
    if body is not None:
        event["body"] = json.dumps(body)
        event["isBase64Encoded"] = False
    return event


@pytest.fixture
def purchase_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, jwt_secret=SECRET)
    with installed_services(purchase_function.app, settings) as services:
        yield services


@pytest.fixture
def admin_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, jwt_secret=SECRET)
    with installed_services(admin_function.app, settings) as services:
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

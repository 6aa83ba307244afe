"""The Lambda handlers refuse hostile input exactly as the gateway does: real API Gateway v1 and
v2 events carrying NUL text, non-canonical ids, slash-suffixed paths, the wrong media type and
JSON nested too deep."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

import functions.purchase.app as purchase_function
import functions.search.app as search_function
import functions.store.app as store_function
from edgemart.services import Services
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    load_event,
    with_path,
    with_query,
    with_request,
)
from tests.support.tokens import auth

V1_V2 = ("v1", "v2")
PRODUCT = "8a5f3e1c-2b4d-4c6e-9f80-1a2b3c4d5e6f"


def assert_problem(response: dict[str, Any], status: int, code: str) -> None:
    assert response["statusCode"] == status, response
    assert headers_of(response)["content-type"] == "application/problem+json"
    assert body_of(response)["code"] == code


@pytest.mark.parametrize("version", V1_V2)
def test_search_text_with_nul(search_services: Services, version: str) -> None:
    for params in ({"q": "lamp\x00"}, {"category": "\x00"}):
        event = with_query(load_event(f"apigw_{version}_get_search.json"), params)
        assert_problem(search_function.handler(event, FakeLambdaContext()), 422, "validation_error")


@pytest.mark.parametrize("version", V1_V2)
def test_no_slash_redirect(search_services: Services, version: str) -> None:
    event = with_path(load_event(f"apigw_{version}_get_search.json"), "/marketplace/search/")
    response = search_function.handler(event, FakeLambdaContext())
    assert_problem(response, 404, "not_found")
    assert "location" not in headers_of(response)


@pytest.mark.parametrize("version", V1_V2)
@pytest.mark.parametrize("spelling", [PRODUCT.upper(), PRODUCT.replace("-", "")])
def test_product_ids_have_one_spelling(
    store_services: Services, version: str, spelling: str
) -> None:
    event = with_path(
        load_event(f"apigw_{version}_get_store_unknown.json"), f"/products/{spelling}"
    )
    assert_problem(store_function.handler(event, FakeLambdaContext()), 404, "not_found")


@pytest.mark.parametrize("version", V1_V2)
def test_store_slug_with_nul(store_services: Services, version: str) -> None:
    event = with_path(load_event(f"apigw_{version}_get_store_unknown.json"), "/stores/shop\x00")
    assert_problem(store_function.handler(event, FakeLambdaContext()), 422, "validation_error")


def purchase_event(version: str, content_type: str, body: str) -> dict[str, Any]:
    headers = {**auth("hostile-buyer"), "Idempotency-Key": uuid.uuid4().hex}
    event = with_request(
        load_event(f"apigw_{version}_post_purchases.json"),
        {**headers, "Content-Type": content_type},
    )
    event["body"] = body
    event["isBase64Encoded"] = False
    return event


@pytest.mark.parametrize("version", V1_V2)
def test_purchase_body_rules(purchase_services: Services, version: str) -> None:
    document = json.dumps({"product_id": PRODUCT, "quantity": 1})
    form = purchase_event(version, "application/x-www-form-urlencoded", document)
    assert_problem(
        purchase_function.handler(form, FakeLambdaContext()), 415, "unsupported_media_type"
    )
    deep = purchase_event(version, "application/json", "[" * 1000 + "]" * 1000)
    assert_problem(purchase_function.handler(deep, FakeLambdaContext()), 400, "invalid_json")
    braced = purchase_event(
        version, "application/json", json.dumps({"product_id": "{" + PRODUCT + "}", "quantity": 1})
    )
    assert_problem(purchase_function.handler(braced, FakeLambdaContext()), 422, "validation_error")

"""Token rules through a Lambda handler: the purchase function with a real API Gateway v2
event answers 401 problem+json for every refused token, before touching the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

import functions.purchase.app as purchase_function
from edgemart.auth import LIFETIME_TOO_LONG
from edgemart.services import Services
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    load_event,
    with_request,
)
from tests.support.tokens import REFUSED_CLAIMS

SECRET = "auth-handler-tests-secret-of-32-bytes!"


@pytest.fixture
def purchase_services(module_database_url: str) -> Iterator[Services]:
    settings = settings_for(module_database_url, jwt_secret=SECRET, jwt_max_token_lifetime_s=86_400)
    with installed_services(purchase_function.app, settings) as services:
        yield services


def purchase(**claims: Any) -> dict[str, Any]:
    token = jwt.encode(
        {"sub": "dana", "exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256"
    )
    request = with_request(
        load_event("apigw_v2_post_purchases.json"),
        {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
        {},
    )
    response: dict[str, Any] = purchase_function.handler(request, FakeLambdaContext())
    return response


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        *REFUSED_CLAIMS,
        pytest.param(
            {"exp": int(time.time()) + 10 * 86_400}, LIFETIME_TOO_LONG, id="beyond-max-lifetime"
        ),
    ],
)
def test_refused_tokens_are_401_problems(
    purchase_services: Services, claims: dict[str, Any], detail: str
) -> None:
    response = purchase(**claims)
    assert response["statusCode"] == 401, response
    assert headers_of(response)["content-type"] == "application/problem+json"
    body = body_of(response)
    assert (body["code"], body["detail"]) == ("unauthorized", detail)


def test_a_clean_token_gets_past_authentication(purchase_services: Services) -> None:
    response = purchase()
    assert response["statusCode"] == 422 and body_of(response)["code"] == "validation_error"

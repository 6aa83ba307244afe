"""Response headers through the Lambda handlers, with real API Gateway v1 and v2 events:
refusals are no-store, everything is nosniff, home goes out gzipped (base64 in the Lambda
response) and CORS answers preflights as the gateway does."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import functions.home.app as home_function
import functions.purchase.app as purchase_function
import functions.search.app as search_function
import functions.store.app as store_function
from edgemart.appfactory import build_app, lambda_handler
from edgemart.services import Services
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    load_event,
    with_method,
    with_request,
)

V1_V2 = ["apigw_v2_{}.json", "apigw_v1_{}.json"]
SHOP = "https://shop.example"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
HANDLERS: dict[str, Handler] = {
    "home": home_function.handler,
    "search": search_function.handler,
    "store": store_function.handler,
    "purchase": purchase_function.handler,
}


def event(template: str, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return with_request(load_event(template.format(name)), headers or {})


def assert_never_stored(response: dict[str, Any]) -> None:
    headers = headers_of(response)
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("template", V1_V2)
@pytest.mark.parametrize(
    ("function", "event_name", "status"),
    [
        pytest.param("home", "post_home", 405, id="the router's 405"),
        pytest.param("search", "get_search_bad_query", 422, id="a validation 422"),
        pytest.param("store", "get_store_unknown", 404, id="a route's 404"),
        pytest.param("purchase", "post_purchases", 401, id="an unauthenticated purchase"),
    ],
)
def test_refusals_are_no_store(
    request: pytest.FixtureRequest, template: str, function: str, event_name: str, status: int
) -> None:
    request.getfixturevalue(f"{function}_services")  # the function's app on the catalog
    handler = HANDLERS[function]
    response = handler(event(template, event_name), FakeLambdaContext())
    assert response["statusCode"] == status
    assert_never_stored(response)


@pytest.mark.parametrize("template", V1_V2)
def test_home_is_gzipped_when_accepted(home_services: Services, template: str) -> None:
    context = FakeLambdaContext()
    plain = home_function.handler(
        event(template, "get_home", {"Accept-Encoding": "identity"}), context
    )
    compressed = home_function.handler(
        event(template, "get_home", {"Accept-Encoding": "gzip"}), context
    )
    assert (plain["statusCode"], compressed["statusCode"]) == (200, 200)
    assert compressed["isBase64Encoded"] is True
    raw = base64.b64decode(compressed["body"])
    headers = headers_of(compressed)
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"].startswith("public, max-age=0, s-maxage=60")
    assert json.loads(gzip.decompress(raw)) == body_of(plain)
    assert "content-encoding" not in headers_of(plain)
    assert headers["etag"] != headers_of(plain)["etag"]
    revalidated = home_function.handler(
        event(template, "get_home", {"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]}),
        context,
    )
    assert revalidated["statusCode"] == 304
    assert revalidated["body"] == ""
    assert "content-encoding" not in headers_of(revalidated)


@pytest.fixture
def cors_home_handler(catalog_database_url: str) -> Iterator[Handler]:
    """The home function's routes built as its module builds them, with CORS on and one
    request a minute (a preflight that counted would make the GET after it a 429)."""
    settings = settings_for(
        catalog_database_url,
        cors_allow_origins=(SHOP,),
        rate_limit_overrides=(("home", 1, 60),),
    )
    app = build_app(home_function.routes, services=Services.from_settings(settings))
    with installed_services(app, settings):
        yield lambda_handler(app, "home")


@pytest.mark.parametrize("template", V1_V2)
def test_cors_preflight_and_response(cors_home_handler: Handler, template: str) -> None:
    context = FakeLambdaContext()
    asks = {"Origin": SHOP, "Access-Control-Request-Method": "GET"}
    for _ in range(2):  # preflights do not count against the limit of one request a minute
        preflight = cors_home_handler(
            with_method(event(template, "get_home", asks), "OPTIONS"), context
        )
        assert preflight["statusCode"] == 204
    headers = headers_of(preflight)
    assert headers["access-control-allow-origin"] == SHOP
    assert "GET" in headers["access-control-allow-methods"]
    assert "Authorization" in headers["access-control-allow-headers"]
    assert headers["access-control-max-age"]
    assert "Origin" in headers["vary"]

    response = cors_home_handler(event(template, "get_home", {"Origin": SHOP}), context)
    assert response["statusCode"] == 200
    headers = headers_of(response)
    assert headers["access-control-allow-origin"] == SHOP
    assert "RateLimit" in headers["access-control-expose-headers"]
    assert headers["vary"] == "Accept-Encoding, Origin"


@pytest.mark.parametrize("template", V1_V2)
def test_another_origins_preflight_is_not_cors(cors_home_handler: Handler, template: str) -> None:
    other = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    refused = cors_home_handler(
        with_method(event(template, "get_home", other), "OPTIONS"), FakeLambdaContext()
    )
    assert refused["statusCode"] == 405
    assert not [name for name in headers_of(refused) if name.startswith("access-control-")]

"""A 405's `Allow` lists every method the route table serves on the path, whichever function
serves which: through the store and admin Lambda handlers (real API Gateway events) and the
gateway."""

from __future__ import annotations

import httpx
import pytest

import functions.admin.app as admin_function
import functions.store.app as store_function
from edgemart.services import Services
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    load_event,
    with_method,
    with_path,
)

PRODUCT = "/products/0b6a4c9e-7f3c-4e0e-9d51-3c1e3f3e2a10"
SWITCH = "/admin/kill-switches/purchases"
EVENTS = ["apigw_v2_get_store_unknown.json", "apigw_v1_get_store_unknown.json"]


def refused(handler: object, event_name: str, method: str, path: str) -> dict[str, str]:
    event = with_method(with_path(load_event(event_name), path), method)
    response = handler(event, FakeLambdaContext())  # type: ignore[operator]
    assert response["statusCode"] == 405
    assert body_of(response)["code"] == "method_not_allowed"
    return headers_of(response)


@pytest.mark.parametrize("event_name", EVENTS)
def test_store_handler_allows_patch_beside_get(store_services: Services, event_name: str) -> None:
    headers = refused(store_function.handler, event_name, "DELETE", PRODUCT)
    assert headers["allow"] == "GET, HEAD, PATCH"


@pytest.mark.parametrize("event_name", EVENTS)
def test_admin_handler_allows_put_beside_get(admin_services: Services, event_name: str) -> None:
    headers = refused(admin_function.handler, event_name, "DELETE", SWITCH)
    assert headers["allow"] == "GET, HEAD, PUT"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", PRODUCT, "GET, HEAD, PATCH"),
        ("DELETE", SWITCH, "GET, HEAD, PUT"),
        ("PUT", "/purchases", "GET, HEAD, POST"),
        ("POST", "/openapi.json", "GET, HEAD"),
    ],
)
async def test_gateway_allow(
    gateway_client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await gateway_client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow

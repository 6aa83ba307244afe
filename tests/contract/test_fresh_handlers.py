"""In Lambda too, the function that made a write serves the new data at once: the store
function's PATCH drops its own cached product page (real API Gateway v1 and v2 events)."""

from __future__ import annotations

import pytest

import functions.store.app as store_function
from edgemart.services import Services
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    load_event,
    with_method,
    with_path,
    with_request,
)
from tests.support.purchases import new_product, store_owner
from tests.support.tokens import auth


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_unlisted_product_is_gone_from_the_functions_own_cache(
    store_services: Services, catalog_database_url: str, version: str
) -> None:
    product = new_product(catalog_database_url, stock=4)
    path = f"/products/{product}"

    def get() -> dict[str, object]:
        event = with_path(load_event(f"apigw_{version}_get_store_unknown.json"), path)
        return store_function.handler(event, FakeLambdaContext())

    assert get()["statusCode"] == 200  # now cached for the route's two minutes
    patch = with_request(
        with_method(
            with_path(load_event(f"apigw_{version}_get_store_unknown.json"), path), "PATCH"
        ),
        {**auth(store_owner(catalog_database_url)), "Content-Type": "application/json"},
        {"is_available": False},
    )
    patched = store_function.handler(patch, FakeLambdaContext())
    assert patched["statusCode"] == 200, patched
    gone = get()
    assert gone["statusCode"] == 404 and body_of(gone)["code"] == "product_not_found"

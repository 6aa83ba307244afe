"""Purchases through the purchase function's Lambda handler, with `EDGE_PURGE=cloudfront`,
invalidate their products' pages at the edge: the function builds the purge from its settings,
the write queues it, and the end of the invocation (`edgemart.invocation`) waits for what may go
now (tests/unit/test_invocation.py checks that order). A purchase inside the one-second batch
window of the previous one goes with the next batch (decision 0035). CloudFront is moto's."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

import functions.purchase.app as purchase_function
from edgemart.edgepurge import cloudfront_client
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    installed_services,
    load_event,
    with_request,
)
from tests.integration.test_edge_purge_cloudfront import aws, client, distribution  # noqa: F401
from tests.support.purchases import fund, new_product
from tests.support.tokens import SECRET, auth

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def invalidated_paths(distribution_id: str) -> list[str]:
    cloudfront = cloudfront_client()
    paths: list[str] = []
    listed = cloudfront.list_invalidations(DistributionId=distribution_id)
    for summary in listed["InvalidationList"].get("Items", []):
        invalidation = cloudfront.get_invalidation(
            DistributionId=distribution_id, Id=summary["Id"]
        )["Invalidation"]
        paths += invalidation["InvalidationBatch"]["Paths"]["Items"]
    return paths


def purchase_event(event: str, product: str) -> dict[str, Any]:
    return with_request(
        load_event(event),
        {
            **auth("edge-buyer"),
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
        {"product_id": product, "quantity": 1},
    )


@pytest.mark.parametrize("event", ["apigw_v2_post_purchases.json"])
def test_purchases_invalidate_their_products_at_the_edge(
    catalog_database_url: str,
    distribution: str,  # noqa: F811
    event: str,
) -> None:
    """The first purchase's path is out when its invocation returns; the second, inside the
    first one's batch window, goes with the next batch, about a second later."""
    settings = settings_for(
        catalog_database_url,
        jwt_secret=SECRET,
        edge_purge="cloudfront",
        cloudfront_distribution_id=distribution,
    )
    first, second = (new_product(catalog_database_url, stock=2) for _ in range(2))
    fund(catalog_database_url, "edge-buyer", 10_000)
    with installed_services(purchase_function.app, settings):
        assert invalidated_paths(distribution) == []
        for product in (first, second):
            placed = purchase_function.handler(purchase_event(event, product), FakeLambdaContext())
            assert placed["statusCode"] == 201, placed
        assert f"/products/{first}" in invalidated_paths(distribution)
        deadline = time.monotonic() + 3.0
        while len(invalidated_paths(distribution)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(invalidated_paths(distribution)) == sorted(
            [f"/products/{first}", f"/products/{second}"]
        )

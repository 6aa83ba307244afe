"""The queued-purchase message: it names its tenant; one sent before tenancy is `default`'s."""

import json
import uuid

import pytest

from edgemart.purchasequeue import PurchaseMessage, purchase_message
from edgemart.tenancy import DEFAULT_TENANT_ID

ORDER = str(uuid.UUID(int=1))
PRODUCT = str(uuid.UUID(int=2))
TENANT = str(uuid.UUID(int=3))


def test_a_message_names_its_tenant() -> None:
    body = json.dumps({"order_id": ORDER, "product_id": PRODUCT, "tenant_id": TENANT})
    assert purchase_message(body) == PurchaseMessage(TENANT, ORDER, PRODUCT)


def test_a_message_from_before_tenancy_is_the_default_tenants() -> None:
    body = json.dumps({"order_id": ORDER, "product_id": PRODUCT})
    assert purchase_message(body).tenant_id == str(DEFAULT_TENANT_ID)


def test_ids_come_back_canonical() -> None:
    body = json.dumps(
        {"order_id": ORDER.upper(), "product_id": PRODUCT, "tenant_id": TENANT.replace("-", "")}
    )
    assert purchase_message(body) == PurchaseMessage(TENANT, ORDER, PRODUCT)


@pytest.mark.parametrize("tenant", ["default", "", 7, None])
def test_a_tenant_that_is_not_a_uuid_is_not_our_message(tenant: object) -> None:
    body = json.dumps({"order_id": ORDER, "product_id": PRODUCT, "tenant_id": tenant})
    with pytest.raises(ValueError, match="not a purchase message"):
        purchase_message(body)

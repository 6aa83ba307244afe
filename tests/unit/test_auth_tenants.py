"""Whose tenant a token is (its org_id claim), and who may administer the platform."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from edgemart.auth import (
    ForbiddenError,
    Principal,
    org_id_from_claims,
    require_platform_admin,
    require_tenant,
)
from edgemart.errors import TenantMismatchError
from edgemart.tenancy import DEFAULT_TENANT, Tenant

SHOP = Tenant(uuid.UUID("6f1c2a4e-0000-4000-8000-00000000abcd"), "shop")


@pytest.mark.parametrize(
    ("claims", "org_id"),
    [
        ({"org_id": "shop"}, "shop"),
        ({"app_metadata": {"org_id": "shop", "role": "admin"}}, "shop"),
        ({"org_id": "shop", "app_metadata": {"org_id": "other"}}, "shop"),  # the claim first
        ({}, None),
        # Present in any form, it names a tenant (one that matches none): such a token is
        # neither a tenant's nor a platform administrator's.
        ({"org_id": ""}, ""),
        ({"org_id": 7}, "7"),
        ({"org_id": ["shop"]}, "['shop']"),
        ({"app_metadata": "shop"}, None),
        ({"app_metadata": {"org_id": None}}, None),
    ],
)
def test_the_org_id_claim(claims: dict[str, Any], org_id: str | None) -> None:
    assert org_id_from_claims(claims) == org_id


@pytest.mark.parametrize(
    "org_id",
    [
        "shop",
        "6f1c2a4e-0000-4000-8000-00000000abcd",
        "6F1C2A4E-0000-4000-8000-00000000ABCD",  # the id in another spelling is the id
        "6f1c2a4e00004000800000000000abcd",
        "urn:uuid:6f1c2a4e-0000-4000-8000-00000000abcd",
    ],
)
def test_a_token_naming_the_tenant_by_slug_or_id_belongs_to_it(org_id: str) -> None:
    principal = Principal("u1", frozenset(), org_id)
    assert principal.belongs_to(SHOP)
    require_tenant(principal, SHOP)


@pytest.mark.parametrize(
    "org_id", [None, "default", "Shop", "shop ", "other", str(DEFAULT_TENANT.id), "not-a-uuid"]
)
def test_a_token_of_another_tenant_or_none_is_a_mismatch(org_id: str | None) -> None:
    principal = Principal("u1", frozenset({"admin"}), org_id)
    assert not principal.belongs_to(SHOP)
    with pytest.raises(TenantMismatchError) as refused:
        require_tenant(principal, SHOP)
    assert (refused.value.status, refused.value.code) == (403, "tenant_mismatch")


def test_a_platform_admin_token_has_the_role_and_no_tenant() -> None:
    require_platform_admin(Principal("ops", frozenset({"platform_admin"})))
    for refused in (
        Principal("ops", frozenset({"platform_admin"}), "shop"),  # a tenant's token
        Principal("ops", frozenset({"admin"})),
        Principal("ops", frozenset()),
    ):
        with pytest.raises(ForbiddenError) as error:
            require_platform_admin(refused)
        assert (error.value.status, error.value.code) == (403, "forbidden")


def test_a_platform_admin_token_belongs_to_no_tenant() -> None:
    platform = Principal("ops", frozenset({"platform_admin"}))
    assert not platform.belongs_to(SHOP) and not platform.belongs_to(DEFAULT_TENANT)

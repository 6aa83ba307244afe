"""edgemart.tenantscope: a name made a tenant's, and taken apart again."""

from __future__ import annotations

import uuid

import pytest

from edgemart.tenancy import DEFAULT_TENANT, DEFAULT_TENANT_ID
from edgemart.tenantscope import scope_prefix, scoped, split_scope
from tests.support.tenants import ACME, GLOBEX


def test_the_default_tenant_s_names_are_spelled_as_before_tenancy() -> None:
    for name in ("search?q=lamp", "product:abc", "user:buyer-1", "/marketplace/search", ""):
        assert scoped(DEFAULT_TENANT, name) == name
        assert scoped(DEFAULT_TENANT_ID, name) == name
    assert scope_prefix(DEFAULT_TENANT) == ""


def test_another_tenant_s_names_carry_its_id() -> None:
    assert scoped(ACME, "store:shoes") == f"@{ACME.id}:store:shoes"
    assert scoped(ACME.id, "store:shoes") == scoped(ACME, "store:shoes")
    assert scoped(ACME, "store:shoes") != scoped(GLOBEX, "store:shoes")


@pytest.mark.parametrize("name", ["search?q=x", "store:shoes", "ip:203.0.113.9", "/products/1"])
def test_a_scoped_name_splits_back_into_its_tenant_and_name(name: str) -> None:
    for tenant in (DEFAULT_TENANT, ACME, GLOBEX):
        assert split_scope(scoped(tenant, name)) == (tenant.id, name)


def test_a_scoped_prefix_is_a_prefix_of_its_own_tenant_s_names_only() -> None:
    prefix = scoped(ACME, "search?")
    assert scoped(ACME, "search?q=lamp").startswith(prefix)
    for other in (scoped(GLOBEX, "search?q=lamp"), "search?q=lamp"):
        assert not other.startswith(prefix)
    # The default tenant's prefix is a prefix of no other tenant's name.
    assert not scoped(ACME, "search?q=lamp").startswith("search?")


@pytest.mark.parametrize(
    "name",
    [
        "@not-a-uuid:search?",
        f"@{str(ACME.id).upper()}:search?",  # not the spelling `scoped` writes
        f"@{ACME.id}search?",  # no end of scope
        "@",
        f"@{uuid.UUID(int=1).hex}:x",  # hex without dashes
    ],
)
def test_a_name_with_a_malformed_scope_is_the_default_tenant_s_as_it_stands(name: str) -> None:
    assert split_scope(name) == (DEFAULT_TENANT_ID, name)

"""Platform routes through the gateway on a real database: creating a tenant (its domains,
a copy of the default tenant's categories with ids of its own, its kill switches off, an audit
row in its own audit log), reading it, replacing its domains; who may; conflicts, including
domains differing only in case and two requests racing for the same slug or domain."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgemart.settings import Settings
from tests.support.purchases import gateway
from tests.support.sql import sql
from tests.support.tokens import auth

pytestmark = pytest.mark.anyio
PLATFORM = auth("operator", roles=["platform_admin"])
DEFAULT_TENANT = "00000000-0000-0000-0000-000000000001"


def tenancy_modes() -> list[dict[str, str]]:
    """The platform routes answer in every mode: single, and multi once it is declared."""
    declared = {field.name for field in dataclasses.fields(Settings)}
    return [{}, *([{"tenancy": "multi"}] if "tenancy" in declared else [])]


@pytest.fixture(
    scope="module", params=tenancy_modes(), ids=lambda mode: mode.get("tenancy", "default")
)
async def client(
    request: pytest.FixtureRequest, app_role_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(
        app_role_url, rate_limit_overrides=(("admin", 0, 60),), **request.param
    ) as http:
        yield http


def new_slug() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def tenant_body(slug: str, *domains: str, **more: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": f"Shop {slug}",
        "domains": list(domains or [f"{slug}.example"]),
        **more,
    }


async def test_create_read_and_replace_domains(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    slug = new_slug()
    body = tenant_body(slug, f"Shop.{slug}.Example", f"www.{slug}.example", platform_fee_bps=250)
    created = await client.post("/platform/tenants", headers=PLATFORM, json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/platform/tenants/{slug}"
    assert created.headers["cache-control"] == "no-store"
    tenant = created.json()
    assert set(tenant) == {"id", "slug", "name", "domains", "platform_fee_bps", "created_at"}
    assert (tenant["slug"], tenant["name"], tenant["platform_fee_bps"]) == (
        slug,
        f"Shop {slug}",
        250,
    )
    assert tenant["domains"] == sorted([f"shop.{slug}.example", f"www.{slug}.example"])
    assert tenant["created_at"].endswith("Z")

    read = await client.get(f"/platform/tenants/{slug}", headers=PLATFORM)
    assert read.status_code == 200 and read.json() == tenant

    replaced = await client.put(
        f"/platform/tenants/{slug}/domains",
        headers=PLATFORM,
        json={"domains": [f"WWW.{slug}.example", f"new.{slug}.example"]},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {
        **tenant,
        "domains": [f"new.{slug}.example", f"www.{slug}.example"],
    }
    stored = sql(
        url, "SELECT domain FROM tenant_domains WHERE tenant_id = %s ORDER BY 1", tenant["id"]
    )
    assert [row[0] for row in stored] == [f"new.{slug}.example", f"www.{slug}.example"]

    audit = sql(
        url,
        "SELECT tenant_id::text, actor_sub, action, entity_id, details, request_id IS NOT NULL "
        "FROM audit_log WHERE entity_type = 'tenant' AND entity_id = %s ORDER BY id",
        tenant["id"],
    )
    assert [(row[0], row[1], row[2], row[3], row[5]) for row in audit] == [
        (tenant["id"], "operator", "tenant.create", tenant["id"], True),
        (tenant["id"], "operator", "tenant.domains", tenant["id"], True),
    ]
    assert audit[0][4] == {
        "slug": slug,
        "name": f"Shop {slug}",
        "domains": [f"shop.{slug}.example", f"www.{slug}.example"],
        "platform_fee_bps": 250,
    }
    assert audit[1][4] == {
        "added": [f"new.{slug}.example"],
        "removed": [f"shop.{slug}.example"],
        "domains": [f"www.{slug}.example", f"new.{slug}.example"],
    }

    # The same domains again: nothing changes, nothing is audited.
    again = await client.put(
        f"/platform/tenants/{slug}/domains",
        headers=PLATFORM,
        json={"domains": [f"new.{slug}.example", f"www.{slug}.example"]},
    )
    assert again.status_code == 200 and again.json() == replaced.json()
    count = sql(url, "SELECT count(*) FROM audit_log WHERE entity_id = %s", tenant["id"])
    assert count == [(2,)]


async def test_a_new_tenant_starts_with_the_default_categories_and_switches_off(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    slug = new_slug()
    created = await client.post("/platform/tenants", headers=PLATFORM, json=tenant_body(slug))
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    assert created.json()["platform_fee_bps"] is None

    def categories(tenant: str) -> list[tuple[Any, ...]]:
        return [
            tuple(row)
            for row in sql(
                url,
                "SELECT id, slug, name, icon, color FROM categories WHERE tenant_id = %s "
                "ORDER BY id",
                tenant,
            )
        ]

    originals, copies = categories(DEFAULT_TENANT), categories(tenant_id)
    assert originals, "the catalog fixture has categories"
    assert [row[1:] for row in copies] == [row[1:] for row in originals]
    assert not {row[0] for row in copies} & {row[0] for row in originals}
    switches = sql(
        url,
        "SELECT name, enabled FROM kill_switches WHERE tenant_id = %s ORDER BY name",
        tenant_id,
    )
    defaults = sql(
        url, "SELECT name FROM kill_switches WHERE tenant_id = %s ORDER BY name", DEFAULT_TENANT
    )
    assert [tuple(row) for row in switches] == [(row[0], False) for row in defaults]
    for table in ("stores", "products", "orders", "wallets"):
        assert sql(url, f"SELECT count(*) FROM {table} WHERE tenant_id = %s", tenant_id) == [(0,)]


async def test_conflicts_slug_and_domains_in_any_case(client: httpx.AsyncClient) -> None:
    first, second = new_slug(), new_slug()
    made = await client.post(
        "/platform/tenants", headers=PLATFORM, json=tenant_body(first, f"{first}.example")
    )
    assert made.status_code == 201
    other = await client.post(
        "/platform/tenants", headers=PLATFORM, json=tenant_body(second, f"{second}.example")
    )
    assert other.status_code == 201

    refused = [
        tenant_body(first, f"fresh-{first}.example"),  # the slug
        tenant_body(new_slug(), f"{first.upper()}.EXAMPLE"),  # a domain, in upper case
        tenant_body(new_slug(), "localhost"),  # the default tenant's
    ]
    for body in refused:
        answer = await client.post("/platform/tenants", headers=PLATFORM, json=body)
        assert answer.status_code == 409, body
        assert answer.json()["code"] == "tenant_conflict"
    nothing_left = await client.get(f"/platform/tenants/{refused[1]['slug']}", headers=PLATFORM)
    assert nothing_left.status_code == 404  # all or nothing

    taken = await client.put(
        f"/platform/tenants/{second}/domains",
        headers=PLATFORM,
        json={"domains": [f"{second}.example", f"{first}.Example"]},
    )
    assert taken.status_code == 409 and taken.json()["code"] == "tenant_conflict"
    assert f"{first}.example" in taken.json()["detail"]
    unchanged = await client.get(f"/platform/tenants/{second}", headers=PLATFORM)
    assert unchanged.json()["domains"] == [f"{second}.example"]


async def test_racing_creates_of_one_slug_or_domain_make_one_tenant(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    slug = new_slug()
    same_slug = [tenant_body(slug, f"{n}-{slug}.example") for n in range(6)]
    domain = f"race-{uuid.uuid4().hex[:8]}.example"
    same_domain = [tenant_body(new_slug(), domain.upper() if n % 2 else domain) for n in range(6)]
    for bodies in (same_slug, same_domain):
        answers = await asyncio.gather(
            *(client.post("/platform/tenants", headers=PLATFORM, json=body) for body in bodies)
        )
        assert sorted(answer.status_code for answer in answers) == [201] + [409] * 5
    owners = sql(
        catalog_database_url, "SELECT count(*) FROM tenant_domains WHERE domain = %s", domain
    )
    assert owners == [(1,)]


async def test_who_may(client: httpx.AsyncClient) -> None:
    slug = new_slug()
    body = tenant_body(slug)
    calls = [
        ("POST", "/platform/tenants", body),
        ("GET", "/platform/tenants/default", None),
        ("PUT", "/platform/tenants/default/domains", {"domains": ["localhost", "127.0.0.1"]}),
    ]
    tenant_admin = auth("ops", roles=["platform_admin", "admin"], org_id=DEFAULT_TENANT)
    supabase_tenant = auth("ops", roles=["platform_admin"], app_metadata={"org_id": "default"})
    for method, path, json in calls:
        assert (await client.request(method, path, json=json)).status_code == 401
        for headers in (auth("root", roles=["admin"]), tenant_admin, supabase_tenant):
            answer = await client.request(method, path, json=json, headers=headers)
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["code"] == "forbidden"
    assert (await client.get(f"/platform/tenants/{slug}", headers=PLATFORM)).status_code == 404


async def test_unknown_tenant_is_404(client: httpx.AsyncClient) -> None:
    for slug in ("no-such-tenant", "UPPER", "x"):
        read = await client.get(f"/platform/tenants/{slug}", headers=PLATFORM)
        assert read.status_code == 404 and read.json()["code"] == "tenant_not_found", slug
    put = await client.put(
        "/platform/tenants/no-such-tenant/domains",
        headers=PLATFORM,
        json={"domains": ["nowhere.example"]},
    )
    assert put.status_code == 404 and put.json()["code"] == "tenant_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "default", "name": "D", "domains": ["d.example"]}, "slug"),
        ({"slug": "ab", "name": "D", "domains": ["d.example"]}, "slug"),
        ({"slug": "Shop", "name": "D", "domains": ["d.example"]}, "slug"),
        ({"slug": "shop-x", "name": "", "domains": ["d.example"]}, "name"),
        ({"slug": "shop-x", "name": "D", "domains": []}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": "d.example"}, "domains"),
        (
            {"slug": "shop-x", "name": "D", "domains": [f"d{n}.example" for n in range(21)]},
            "domains",
        ),
        ({"slug": "shop-x", "name": "D", "domains": ["d.example:8000"]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["*.example"]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["d.example."]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["-d.example"]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["d..example"]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["d.example", "D.Example"]}, "domains"),
        ({"slug": "shop-x", "name": "D", "domains": ["a" * 64 + ".example"]}, "domains"),
        (
            {"slug": "shop-x", "name": "D", "domains": ["d.example"], "platform_fee_bps": 5001},
            "platform_fee_bps",
        ),
        ({"slug": "shop-x", "name": "D", "domains": ["d.example"], "extra": 1}, "extra"),
    ],
)
async def test_inputs_are_held_to_the_table(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await client.post("/platform/tenants", headers=PLATFORM, json=body)
    assert answer.status_code == 422, answer.text
    assert [error["field"] for error in answer.json()["errors"]] == [field]
    # Inputs are refused before the tenant is looked up: 422 for bad domains, else 404.
    put = await client.put(
        "/platform/tenants/no-such-tenant/domains",
        headers=PLATFORM,
        json={"domains": body["domains"]},
    )
    assert put.status_code == (422 if field == "domains" else 404), put.text

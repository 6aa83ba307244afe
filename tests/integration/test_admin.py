"""Admin routes: kill switches with cooldown, wallet credits, purchase mode; all audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgemart.services import Services
from gateway.app import create_gateway
from tests.conftest import settings_for
from tests.integration.test_purchase import SECRET, auth, fund, headers, new_product, sql

pytestmark = pytest.mark.anyio
ADMIN = auth("root", roles=["admin"])


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        catalog_database_url,
        jwt_secret=SECRET,
        kill_switch_cooldown_s=60,
        rate_limit_overrides=(("admin", 0, 60), ("purchases", 0, 60)),
    )
    services = Services.from_settings(settings)
    transport = httpx.ASGITransport(app=create_gateway(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http
    await services.aclose()


def audit_rows(url: str, action: str) -> list[Any]:
    return sql(
        url,
        "SELECT actor_sub, entity_id, details, request_id FROM audit_log "
        "WHERE action = %s ORDER BY id",
        action,
    )


async def test_roles_and_unknown_switch(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/kill-switches/purchases")).status_code == 401
    forbidden = await client.get("/admin/kill-switches/purchases", headers=auth("mallory"))
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
    cognito = auth("ops", **{"cognito:groups": ["admin"]})
    assert (await client.get("/admin/kill-switches/listings", headers=cognito)).status_code == 200
    unknown = await client.get("/admin/kill-switches/everything", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "kill_switch_not_found"


async def test_kill_switch_flip_cooldown_and_purchases(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    on = await client.put(
        "/admin/kill-switches/purchases",
        headers=ADMIN,
        json={"enabled": True, "reason": "incident 42"},
    )
    assert on.status_code == 200
    switch = on.json()
    assert set(switch) == {
        "name",
        "enabled",
        "reason",
        "changed_by",
        "changed_at",
        "cooldown_until",
    }
    assert (switch["enabled"], switch["reason"], switch["changed_by"]) == (
        True,
        "incident 42",
        "root",
    )
    product = new_product(url, stock=3)
    fund(url, "buyer-admin", 10_000)
    refused = await client.post(
        "/purchases", json={"product_id": product, "quantity": 1}, headers=headers("buyer-admin")
    )
    assert refused.status_code == 503 and refused.json()["code"] == "purchases_disabled"
    assert int(refused.headers["retry-after"]) >= 1
    same = await client.put(
        "/admin/kill-switches/purchases",
        headers=ADMIN,
        json={"enabled": True, "reason": "still on"},
    )
    assert same.status_code == 200 and same.json()["cooldown_until"] == switch["cooldown_until"]
    flip = await client.put(
        "/admin/kill-switches/purchases", headers=ADMIN, json={"enabled": False, "reason": "fixed"}
    )
    assert flip.status_code == 409 and flip.json()["code"] == "cooldown_active"
    assert 1 <= int(flip.headers["retry-after"]) <= 60
    sql(url, "UPDATE kill_switches SET cooldown_until = now() WHERE name = 'purchases'")
    off = await client.put(
        "/admin/kill-switches/purchases", headers=ADMIN, json={"enabled": False, "reason": "fixed"}
    )
    assert off.status_code == 200 and off.json()["enabled"] is False
    rows = audit_rows(url, "kill_switch.set")
    assert [(r[0], r[1], r[2]["enabled"]) for r in rows[-2:]] == [
        ("root", "purchases", True),
        ("root", "purchases", False),
    ]
    assert all(r[3] for r in rows)  # every change carries its request id


async def test_switch_body_is_strict(client: httpx.AsyncClient) -> None:
    bad = await client.put("/admin/kill-switches/listings", headers=ADMIN, json={"enabled": "yes"})
    assert bad.status_code == 422


async def test_wallet_credit(client: httpx.AsyncClient, catalog_database_url: str) -> None:
    sub = f"topped-{uuid.uuid4().hex[:6]}"
    first = await client.post(
        f"/admin/wallets/{sub}/credits",
        headers=ADMIN,
        json={"amount_cents": 500, "reason": "welcome"},
    )
    second = await client.post(
        f"/admin/wallets/{sub}/credits", headers=ADMIN, json={"amount_cents": 250}
    )
    assert first.json() == {"sub": sub, "balance_cents": 500}
    assert second.json() == {"sub": sub, "balance_cents": 750}
    for bad in ({"amount_cents": 0}, {"amount_cents": "5"}, {}):
        response = await client.post(f"/admin/wallets/{sub}/credits", headers=ADMIN, json=bad)
        assert response.status_code == 422
    assert len([r for r in audit_rows(catalog_database_url, "wallet.credit") if r[1] == sub]) == 2
    denied = await client.post(
        f"/admin/wallets/{sub}/credits", headers=auth(sub), json={"amount_cents": 1_000_000}
    )
    assert denied.status_code == 403


async def test_purchase_mode(client: httpx.AsyncClient, catalog_database_url: str) -> None:
    product = new_product(catalog_database_url, stock=1)
    response = await client.put(
        f"/admin/products/{product}/purchase-mode", headers=ADMIN, json={"mode": "queued"}
    )
    assert response.json() == {"product_id": product, "mode": "queued"}
    assert sql(
        catalog_database_url, "SELECT purchase_mode FROM products WHERE id = %s", product
    ) == [("queued",)]
    bad = await client.put(
        f"/admin/products/{product}/purchase-mode", headers=ADMIN, json={"mode": "fast"}
    )
    assert bad.status_code == 422
    missing = await client.put(
        f"/admin/products/{uuid.uuid4()}/purchase-mode", headers=ADMIN, json={"mode": "direct"}
    )
    assert missing.status_code == 404


async def test_hide_a_popular_search(client: httpx.AsyncClient, catalog_database_url: str) -> None:
    url = catalog_database_url
    route = "/admin/popular-searches/hidden"
    body = {"query": "  Cheap   WATCHES ", "hidden": True, "reason": "spam wave"}
    assert (await client.put(route, json=body)).status_code == 401
    assert (await client.put(route, headers=auth("mallory"), json=body)).status_code == 403
    hidden = await client.put(route, headers=ADMIN, json=body)
    assert hidden.status_code == 200
    assert hidden.json() == {"query": "cheap watches", "hidden": True}
    assert hidden.headers["cache-control"] == "no-store"
    assert sql(
        url, "SELECT reason, hidden_by FROM hidden_searches WHERE query = %s", "cheap watches"
    ) == [("spam wave", "root")]
    shown = await client.put(route, headers=ADMIN, json={"query": "cheap watches", "hidden": False})
    assert shown.json() == {"query": "cheap watches", "hidden": False}
    assert sql(url, "SELECT 1 FROM hidden_searches WHERE query = 'cheap watches'") == []
    rows = [
        (row[0], row[1], row[2])
        for row in audit_rows(url, "popular_search.hide") + audit_rows(url, "popular_search.unhide")
        if row[1] == "cheap watches"
    ]
    assert rows == [
        ("root", "cheap watches", {"hidden": True, "reason": "spam wave"}),
        ("root", "cheap watches", {"hidden": False, "reason": ""}),
    ]
    for bad in (
        {"hidden": True},
        {"query": "", "hidden": True},
        {"query": "x" * 201, "hidden": True},
        {"query": "   ", "hidden": True},
        {"query": "nul\u0000here", "hidden": True},
        {"query": "lamp", "hidden": "yes"},
        {"query": "lamp"},
        {"query": "lamp", "hidden": True, "reason": "r" * 501},
        {"query": "lamp", "hidden": True, "colour": "red"},
    ):
        refused = await client.put(route, headers=ADMIN, json=bad)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == "application/problem+json", bad
    assert sql(url, "SELECT 1 FROM hidden_searches WHERE query = 'lamp'") == []

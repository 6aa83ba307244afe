"""Admin routes: kill switches with cooldown, wallet credits, purchase mode; all audited."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.purchases import fund, gateway, new_product, product_for
from tests.support.sql import sql
from tests.support.tokens import auth, headers

pytestmark = pytest.mark.anyio
ADMIN = auth("root", roles=["admin"])


def admin_gateway(url: str, **overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The purchase tests' gateway, with admin limits off and a known cooldown."""
    settings: dict[str, Any] = {
        "kill_switch_cooldown_s": 60,
        "rate_limit_overrides": (("admin", 0, 60), ("purchases", 0, 60)),
        **overrides,
    }
    return gateway(url, **settings)


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_gateway(catalog_database_url) as http:
        yield http


def keyed(key: str | None = None, **extra: str) -> dict[str, str]:
    """The admin's headers with an Idempotency-Key (a new one unless given)."""
    return {**ADMIN, "Idempotency-Key": key or uuid.uuid4().hex, **extra}


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
    product = product_for(url, "buyer-admin", stock=3)
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
        headers=keyed(),
        json={"amount_cents": 500, "reason": "welcome"},
    )
    second = await client.post(
        f"/admin/wallets/{sub}/credits", headers=keyed(), json={"amount_cents": 250}
    )
    assert first.json() == {"sub": sub, "balance_cents": 500}
    assert second.json() == {"sub": sub, "balance_cents": 750}
    assert first.headers["cache-control"] == "no-store"
    for bad in ({"amount_cents": 0}, {"amount_cents": "5"}, {"amount_cents": 10**9 + 1}, {}):
        response = await client.post(f"/admin/wallets/{sub}/credits", headers=keyed(), json=bad)
        assert response.status_code == 422
    rows = [r for r in audit_rows(catalog_database_url, "wallet.credit") if r[1] == sub]
    assert [(r[0], r[2]) for r in rows] == [
        ("root", {"amount_cents": 500, "reason": "welcome"}),
        ("root", {"amount_cents": 250, "reason": ""}),
    ]
    assert [r[3] for r in rows] == [first.headers["x-request-id"], second.headers["x-request-id"]]
    denied = await client.post(
        f"/admin/wallets/{sub}/credits",
        headers={**auth(sub), "Idempotency-Key": "k"},
        json={"amount_cents": 1_000_000},
    )
    assert denied.status_code == 403


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "idempotency_key_required"),
        ("", "idempotency_key_required"),
        ("k" * 256, "invalid_idempotency_key"),
        ("café".encode(), "invalid_idempotency_key"),
        ("a\tb", "invalid_idempotency_key"),
    ],
)
async def test_a_credit_needs_a_valid_idempotency_key(
    client: httpx.AsyncClient, catalog_database_url: str, key: Any, code: str
) -> None:
    sub = f"unkeyed-{uuid.uuid4().hex[:6]}"
    request_headers = {**ADMIN} if key is None else {**ADMIN, "Idempotency-Key": key}
    refused = await client.post(
        f"/admin/wallets/{sub}/credits", headers=request_headers, json={"amount_cents": 100}
    )
    assert (refused.status_code, refused.json()["code"]) == (400, code)
    assert refused.headers["content-type"] == "application/problem+json"
    assert sql(catalog_database_url, "SELECT 1 FROM wallets WHERE user_sub = %s", sub) == []


async def test_a_retried_credit_credits_once(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """Same key and body: the original 200 replayed (body byte for byte, Original-Request-ID),
    nothing credited again; same key with another amount or another wallet: 422; the same key
    from another admin is that admin's own credit; a key still running: 409."""
    url = catalog_database_url
    sub = f"retried-{uuid.uuid4().hex[:6]}"
    route = f"/admin/wallets/{sub}/credits"
    key = uuid.uuid4().hex
    body = {"amount_cents": 700, "reason": "refund #12"}
    first = await client.post(route, headers=keyed(key, **{"X-Request-ID": "credit-1"}), json=body)
    again = await client.post(route, headers=keyed(key, **{"X-Request-ID": "credit-2"}), json=body)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json() == {"sub": sub, "balance_cents": 700}
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["original-request-id"] == "credit-1"
    assert again.headers["x-request-id"] == "credit-2"
    assert again.headers["cache-control"] == "no-store"
    assert "idempotent-replayed" not in first.headers
    for changed_route, changed_body in [
        (route, {**body, "amount_cents": 701}),
        (route, {"amount_cents": 700}),
        (f"/admin/wallets/other-{sub}/credits", body),
    ]:
        reused = await client.post(changed_route, headers=keyed(key), json=changed_body)
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
        assert "idempotent-replayed" not in reused.headers
    other_admin = {**auth("root-2", roles=["admin"]), "Idempotency-Key": key}
    theirs = await client.post(route, headers=other_admin, json=body)
    assert theirs.json() == {"sub": sub, "balance_cents": 1400}
    assert "idempotent-replayed" not in theirs.headers
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", sub) == [(1400,)]
    assert len([r for r in audit_rows(url, "wallet.credit") if r[1] == sub]) == 2
    busy = uuid.uuid4().hex
    async with admin_gateway(url, idempotency_key_wait_s=0.3) as http:
        with psycopg.connect(url) as holder:  # a first credit still running under this key
            holder.execute(
                "SELECT pg_advisory_xact_lock("
                "idempotency_lock_key(current_tenant_id(), 'root', %s))",
                [busy],
            )
            in_use = await http.post(route, headers=keyed(busy), json=body)
        assert in_use.status_code == 409 and in_use.json()["code"] == "idempotency_key_in_use"
        assert in_use.headers["cache-control"] == "no-store"
        assert (await http.post(route, headers=keyed(busy), json=body)).status_code == 200
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", sub) == [(2100,)]


async def test_a_key_used_for_a_purchase_is_not_a_credit(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """An admin's keys are one namespace: a purchase's key sent with a credit is reused."""
    url = catalog_database_url
    fund(url, "root", 10_000)
    key = uuid.uuid4().hex
    bought = await client.post(
        "/purchases",
        json={"product_id": new_product(url, stock=1), "quantity": 1},
        headers={**ADMIN, "Idempotency-Key": key},
    )
    assert bought.status_code == 201, bought.text
    credit = await client.post(
        "/admin/wallets/root/credits", headers=keyed(key), json={"amount_cents": 100}
    )
    assert credit.status_code == 422 and credit.json()["code"] == "idempotency_key_reused"
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'root'") == [(9000,)]


async def test_many_identical_credits_at_once_credit_once(catalog_database_url: str) -> None:
    url = catalog_database_url
    sub = f"raced-{uuid.uuid4().hex[:6]}"
    key = uuid.uuid4().hex
    body = {"amount_cents": 1234, "reason": "goodwill"}
    async with admin_gateway(url, db_pool_max_size=20, idempotency_key_wait_s=10.0) as http:
        responses = await asyncio.gather(
            *(
                http.post(f"/admin/wallets/{sub}/credits", headers=keyed(key), json=body)
                for _ in range(40)
            )
        )
    assert Counter(r.status_code for r in responses) == {200: 40}, [r.text for r in responses]
    assert {r.content for r in responses} == {b'{"sub":"%s","balance_cents":1234}' % sub.encode()}
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", sub) == [(1234,)]
    assert len([r for r in audit_rows(url, "wallet.credit") if r[1] == sub]) == 1
    assert sql(
        url, "SELECT count(*) FROM idempotency_keys WHERE user_sub = 'root' AND key = %s", key
    ) == [(1,)]


async def test_purchase_mode(client: httpx.AsyncClient, catalog_database_url: str) -> None:
    """Without PURCHASE_QUEUE_URL, queued mode is refused 409 with nothing changed or audited
    (purchases would stay direct); direct mode is set as before."""
    url = catalog_database_url
    product = new_product(url, stock=1)
    route = f"/admin/products/{product}/purchase-mode"
    refused = await client.put(route, headers=ADMIN, json={"mode": "queued"})
    assert refused.status_code == 409 and refused.json()["code"] == "queued_mode_unavailable"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["cache-control"] == "no-store"
    assert sql(url, "SELECT purchase_mode FROM products WHERE id = %s", product) == [("direct",)]
    assert [r for r in audit_rows(url, "product.purchase_mode") if r[1] == product] == []
    response = await client.put(route, headers=ADMIN, json={"mode": "direct"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert response.json() == {"product_id": product, "mode": "direct"}
    audited = [r[2] for r in audit_rows(url, "product.purchase_mode") if r[1] == product]
    assert audited == [{"mode": "direct"}]
    bad = await client.put(
        f"/admin/products/{product}/purchase-mode", headers=ADMIN, json={"mode": "fast"}
    )
    assert bad.status_code == 422
    missing = await client.put(
        f"/admin/products/{uuid.uuid4()}/purchase-mode", headers=ADMIN, json={"mode": "direct"}
    )
    assert missing.status_code == 404


async def test_list_kill_switches(client: httpx.AsyncClient) -> None:
    """Every switch, in name order, each as its own GET answers it."""
    assert (await client.get("/admin/kill-switches")).status_code == 401
    forbidden = await client.get("/admin/kill-switches", headers=auth("mallory"))
    assert forbidden.status_code == 403
    listed = await client.get("/admin/kill-switches", headers=ADMIN)
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    switches = listed.json()["kill_switches"]
    assert set(listed.json()) == {"kill_switches"}
    assert [s["name"] for s in switches] == ["listings", "purchases"]
    for switch in switches:
        single = await client.get(f"/admin/kill-switches/{switch['name']}", headers=ADMIN)
        assert single.json() == switch


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

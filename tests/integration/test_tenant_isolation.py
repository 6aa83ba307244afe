"""The adversarial isolation suite: two marketplaces on one deployment, built to collide
(the same store slug, product name, buyer, Idempotency-Keys), attacked on every tenant-scoped
route of the route table with the other tenant's ids, slugs, cursors and tokens, a forwarded
host from an untrusted peer, and no host at all: no response ever carries the other tenant's
rows, and each answer is exactly the contract's status. Every case runs through the gateway
and through the function's Lambda handler (API Gateway v2 event JSON), both connected as an
application role that owns nothing, so row-level security is in force underneath."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import functions.admin.app as admin_function
import functions.health.app as health_function
import functions.home.app as home_function
import functions.purchase.app as purchase_function
import functions.search.app as search_function
import functions.store.app as store_function
from edgemart.routetable import ROUTES
from edgemart.services import Services
from edgemart.settings import Settings
from edgemart.tenancy import is_tenant_scoped
from gateway.app import create_gateway
from tests.conftest import serve_in_thread, settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    function_handler,
    load_event,
    text_of,
    with_method,
    with_path,
    with_query,
    with_request,
)
from tests.support.asgi import raw_get
from tests.support.purchases import gateway
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth

pytestmark = [pytest.mark.anyio, pytest.mark.tenancy]

CURSOR_SECRET = "isolation-suite-cursor-secret-0123456789"
PLATFORM = auth("operator", roles=["platform_admin"])
FUNCTIONS = {
    "admin": admin_function,
    "health": health_function,
    "home": home_function,
    "purchase": purchase_function,
    "search": search_function,
    "store": store_function,
}
UNLIMITED = tuple((group, 0, 60) for group in ("home", "search", "store", "listings", "purchases"))


@dataclass
class Marketplace:
    """One tenant and what was made in it; `secrets` are strings that must never appear in
    an answer to the other tenant."""

    slug: str
    host: str
    id: str = ""
    only_store: str = ""
    products: list[str] = field(default_factory=list)
    order: str = ""
    cursor: str = ""
    word: str = ""
    balance_cents: int = 0

    def seller(self) -> dict[str, str]:
        return auth("seller-1", org_id=self.slug)

    def buyer(self) -> dict[str, str]:
        return auth("buyer-1", org_id=self.slug)

    def admin(self) -> dict[str, str]:
        return auth("ops", roles=["admin"], org_id=self.slug)

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.products, self.order, self.only_store, self.word, self.id)


@dataclass
class World:
    alpha: Marketplace
    beta: Marketplace


def multi_settings(url: str, **overrides: Any) -> Settings:
    return settings_for(
        url,
        tenancy="multi",
        jwt_secret=SECRET,
        cursor_secret=CURSOR_SECRET,
        rate_limit_overrides=(*UNLIMITED, ("admin", 0, 60)),
        **overrides,
    )


@pytest.fixture(scope="module")
async def client(app_role_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(
        app_role_url,
        tenancy="multi",
        cursor_secret=CURSOR_SECRET,
        rate_limit_overrides=(*UNLIMITED, ("admin", 0, 60)),
    ) as http:
        yield http


async def build(client: httpx.AsyncClient, owner_url: str, market: Marketplace) -> None:
    """A marketplace made through the API, with the same names as every other one."""
    created = await client.post(
        "/platform/tenants",
        headers=PLATFORM,
        json={"slug": market.slug, "name": market.slug, "domains": [market.host]},
    )
    assert created.status_code == 201, created.text
    market.id = created.json()["id"]
    base = f"http://{market.host}"
    (category,) = sql(
        owner_url,
        "SELECT id FROM categories WHERE tenant_id = %s ORDER BY id LIMIT 1",
        market.id,
    )[0]
    for slug in ("shared-shop", market.only_store):
        store = await client.post(
            f"{base}/stores", json={"slug": slug, "name": "Shared"}, headers=market.seller()
        )
        assert store.status_code == 201, store.text
    for n in range(3):
        product = await client.post(
            f"{base}/products",
            headers=market.seller(),
            json={
                "store_slug": "shared-shop",
                "category_id": category,
                "name": f"Colliding widget {market.word} {n}",
                "price_cents": 1000,
                "stock": 50,
            },
        )
        assert product.status_code == 201, product.text
        market.products.append(product.json()["id"])
    credit = await client.post(
        f"{base}/admin/wallets/buyer-1/credits",
        headers={**market.admin(), "Idempotency-Key": "same-credit-key"},
        json={"amount_cents": 50_000, "reason": "isolation suite"},
    )
    assert credit.status_code == 200, credit.text
    bought = await client.post(
        f"{base}/purchases",
        headers={**market.buyer(), "Idempotency-Key": "same-purchase-key"},
        json={"product_id": market.products[0], "quantity": 1},
    )
    assert bought.status_code == 201, bought.text
    market.order = bought.json()["id"]
    market.balance_cents = 50_000 - 1000
    page = await client.get(
        f"{base}/marketplace/search", params={"q": market.word, "limit": 1, "sort": "newest"}
    )
    assert page.status_code == 200, page.text
    market.cursor = page.json()["next_cursor"]
    assert market.cursor


@pytest.fixture(scope="module")
async def world(client: httpx.AsyncClient, catalog_database_url: str) -> World:
    tag = uuid.uuid4().hex[:6]
    alpha = Marketplace(f"alpha-{tag}", f"alpha-{tag}.test", only_store=f"alpha-only-{tag}")
    beta = Marketplace(f"beta-{tag}", f"beta-{tag}.test", only_store=f"beta-only-{tag}")
    alpha.word, beta.word = f"alphaword{tag}", f"betaword{tag}"
    for market in (alpha, beta):
        await build(client, catalog_database_url, market)
        sql(catalog_database_url, "SELECT refresh_home_lists(%s)", market.id)
    return World(alpha, beta)


@dataclass(frozen=True)
class Attack:
    """One request on the victim-free side (host `beta`) built from `alpha`'s identifiers
    or tokens, and the statuses the contract allows for it."""

    label: str
    route: str
    method: str
    path: str
    statuses: tuple[int, ...]
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    code: str | None = None


def attacks(world: World) -> list[Attack]:
    a, b = world.alpha, world.beta
    a_product, a_order = a.products[0], a.order
    key = {"Idempotency-Key": uuid.uuid4().hex}
    return [
        Attack(
            "list switches",
            "GET /admin/kill-switches",
            "GET",
            "/admin/kill-switches",
            (200,),
            b.admin(),
        ),
        Attack(
            "a's admin token",
            "GET /admin/kill-switches/{name}",
            "GET",
            "/admin/kill-switches/purchases",
            (403,),
            a.admin(),
            code="tenant_mismatch",
        ),
        Attack(
            "a's admin flips b's switch",
            "PUT /admin/kill-switches/{name}",
            "PUT",
            "/admin/kill-switches/purchases",
            (403,),
            a.admin(),
            body={"enabled": True, "reason": "attack"},
            code="tenant_mismatch",
        ),
        Attack(
            "a's admin credits in b",
            "POST /admin/wallets/{sub}/credits",
            "POST",
            "/admin/wallets/buyer-1/credits",
            (403,),
            {**a.admin(), **key},
            body={"amount_cents": 1, "reason": "attack"},
            code="tenant_mismatch",
        ),
        Attack(
            "a's product's mode",
            "PUT /admin/products/{product_id}/purchase-mode",
            "PUT",
            f"/admin/products/{a_product}/purchase-mode",
            (404,),
            b.admin(),
            body={"mode": "direct"},
            code="product_not_found",
        ),
        Attack(
            "a's token hides searches",
            "PUT /admin/popular-searches/hidden",
            "PUT",
            "/admin/popular-searches/hidden",
            (403,),
            a.admin(),
            body={"query": b.word, "hidden": True},
            code="tenant_mismatch",
        ),
        Attack("home", "GET /marketplace/home", "GET", "/marketplace/home", (200,)),
        Attack("api description", "GET /openapi.json", "GET", "/openapi.json", (200,)),
        Attack(
            "buy a's product",
            "POST /purchases",
            "POST",
            "/purchases",
            (404,),
            {**b.buyer(), **key},
            body={"product_id": a_product, "quantity": 1},
            code="product_not_found",
        ),
        Attack(
            "a's token buys",
            "POST /purchases",
            "POST",
            "/purchases",
            (403,),
            {**a.buyer(), **key},
            body={"product_id": b.products[1], "quantity": 1},
            code="tenant_mismatch",
        ),
        Attack(
            "same key replays b's own",
            "POST /purchases",
            "POST",
            "/purchases",
            (201,),
            {**b.buyer(), "Idempotency-Key": "same-purchase-key"},
            body={"product_id": b.products[0], "quantity": 1},
        ),
        Attack("orders", "GET /purchases", "GET", "/purchases", (200,), b.buyer()),
        Attack(
            "a's cursor of orders",
            "GET /purchases",
            "GET",
            "/purchases",
            (422,),
            b.buyer(),
            query={"cursor": a.cursor},
            code="validation_error",
        ),
        Attack(
            "a's order",
            "GET /purchases/{order_id}",
            "GET",
            f"/purchases/{a_order}",
            (404,),
            b.buyer(),
            code="order_not_found",
        ),
        Attack("wallet", "GET /wallet", "GET", "/wallet", (200,), b.buyer()),
        Attack(
            "a's token reads the wallet",
            "GET /wallet",
            "GET",
            "/wallet",
            (403,),
            a.buyer(),
            code="tenant_mismatch",
        ),
        Attack(
            "popular",
            "GET /marketplace/search/popular",
            "GET",
            "/marketplace/search/popular",
            (200,),
        ),
        Attack(
            "a's word",
            "GET /marketplace/search",
            "GET",
            "/marketplace/search",
            (200,),
            query={"q": a.word},
        ),
        Attack(
            "a's cursor",
            "GET /marketplace/search",
            "GET",
            "/marketplace/search",
            (422,),
            query={"q": a.word, "limit": "1", "sort": "newest", "cursor": a.cursor},
            code="validation_error",
        ),
        Attack(
            "a's token opens a store",
            "POST /stores",
            "POST",
            "/stores",
            (403,),
            a.seller(),
            body={"slug": f"x-{uuid.uuid4().hex[:8]}", "name": "x"},
            code="tenant_mismatch",
        ),
        Attack(
            "a's only store",
            "GET /stores/{slug}",
            "GET",
            f"/stores/{a.only_store}",
            (404,),
            code="store_not_found",
        ),
        Attack("the shared slug", "GET /stores/{slug}", "GET", "/stores/shared-shop", (200,)),
        Attack(
            "a's store's payouts",
            "GET /stores/{slug}/payouts",
            "GET",
            f"/stores/{a.only_store}/payouts",
            (404,),
            b.seller(),
            code="store_not_found",
        ),
        Attack(
            "payouts of the shared slug",
            "GET /stores/{slug}/payouts",
            "GET",
            "/stores/shared-shop/payouts",
            (200,),
            b.seller(),
        ),
        Attack(
            "list in a's store",
            "POST /products",
            "POST",
            "/products",
            (422,),
            b.seller(),
            body={
                "store_slug": a.only_store,
                "category_id": 1,
                "name": "x",
                "price_cents": 100,
                "stock": 1,
            },
            code="validation_error",
        ),
        Attack(
            "a plain request for live updates",
            "GET /ws",
            "GET",
            "/ws",
            (426,),
            code="upgrade_required",
        ),
        Attack(
            "a's product",
            "GET /products/{product_id}",
            "GET",
            f"/products/{a_product}",
            (404,),
            code="product_not_found",
        ),
        Attack(
            "edit a's product",
            "PATCH /products/{product_id}",
            "PATCH",
            f"/products/{a_product}",
            (404,),
            b.seller(),
            body={"stock": 0},
            code="product_not_found",
        ),
    ]


def tenant_routes() -> set[str]:
    return {f"{route.method} {route.path}" for route in ROUTES if is_tenant_scoped(route.path)}


def check(attack: Attack, world: World, status: int, body: str) -> None:
    assert status in attack.statuses, (attack.label, status, body)
    if attack.code is not None:
        assert json.loads(body)["code"] == attack.code, (attack.label, body)
    leaked = [secret for secret in world.alpha.secrets if secret and secret in body]
    assert not leaked, (attack.label, leaked, body)


def test_every_tenant_route_is_attacked() -> None:
    """A route added to the route table fails here until the suite attacks it."""
    dummy = Marketplace("a", "a", id="x", products=["p", "q", "r"], order="o", cursor="c")
    covered = {attack.route for attack in attacks(World(dummy, dummy))}
    assert covered == tenant_routes()


async def test_attacks_through_the_gateway(client: httpx.AsyncClient, world: World) -> None:
    for attack in attacks(world):
        response = await client.request(
            attack.method,
            f"http://{world.beta.host}{attack.path}",
            headers=attack.headers,
            params=attack.query,
            json=attack.body,
        )
        check(attack, world, response.status_code, response.text)


def lambda_event(attack: Attack, host: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("apigw_v2_get_health.json"))
    with_method(with_path(event, attack.path), attack.method)
    with_query(event, attack.query)
    headers = {"host": host, **{k.lower(): v for k, v in attack.headers.items()}}
    if attack.body is not None:
        headers["content-type"] = "application/json"
    return with_request(event, headers, attack.body)


async def test_attacks_through_the_lambda_handlers(app_role_url: str, world: World) -> None:
    # On a thread of its own: a handler sets up and closes the event loop of the thread it
    # runs on, as the Lambda runtime's would be, and this module's loop must stay open.
    await anyio.to_thread.run_sync(lambda: attack_through_handlers(app_role_url, world))


def attack_through_handlers(app_role_url: str, world: World) -> None:
    """Every HTTP route's attacks (`/ws` is the gateway's; on AWS the WebSocket API's
    function takes its tenant from `$connect`: tests/contract/test_realtime_handlers.py)."""
    for attack in attacks(world):
        route = next(r for r in ROUTES if f"{r.method} {r.path}" == attack.route)
        if route.websocket:
            continue
        function = route.function
        module = FUNCTIONS[function]
        with function_handler(module.routes, multi_settings(app_role_url), function) as (
            handler,
            _,
        ):
            response = handler(lambda_event(attack, world.beta.host), FakeLambdaContext())
        check(attack, world, response["statusCode"], text_of(response))


async def test_a_forwarded_host_from_an_untrusted_peer_is_not_believed(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.alpha, world.beta
    response = await client.get(
        f"http://{b.host}/products/{a.products[0]}", headers={"X-Forwarded-Host": a.host}
    )
    assert response.status_code == 404
    own = await client.get(
        f"http://{b.host}/products/{b.products[0]}",
        headers={"X-Forwarded-Host": a.host, "CloudFront-Viewer-Host": a.host},
    )
    assert own.status_code == 200 and own.json()["id"] == b.products[0]


async def test_no_host_or_an_unknown_one_is_tenant_not_found(
    client: httpx.AsyncClient, world: World
) -> None:
    for host in ("nowhere.test", f"x.{world.alpha.host}", world.alpha.host.split(".")[0]):
        response = await client.get(f"http://{host}/marketplace/home")
        assert response.status_code == 404 and response.json()["code"] == "tenant_not_found"
    app = client._transport.app  # type: ignore[attr-defined]  # the gateway app itself
    # No Host header at all, on the address the default tenant owns: never a fallback.
    sent = await raw_get(app, "/marketplace/home", server=("127.0.0.1", 80))
    assert sent[0]["status"] == 404
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == (
        "tenant_not_found"
    )


async def test_money_never_crosses(client: httpx.AsyncClient, world: World) -> None:
    """Each tenant's buyer-1 holds exactly what was credited and spent in that tenant; the
    same Idempotency-Keys in both made one credit and one order in each."""
    for market in (world.alpha, world.beta):
        wallet = await client.get(f"http://{market.host}/wallet", headers=market.buyer())
        assert wallet.status_code == 200
        assert wallet.json()["balance_cents"] == market.balance_cents
        orders = await client.get(f"http://{market.host}/purchases", headers=market.buyer())
        assert [order["id"] for order in orders.json()["orders"]] == [market.order]


async def test_each_tenant_sees_its_own(client: httpx.AsyncClient, world: World) -> None:
    """The other side of every refusal above: on its own host each tenant finds what it made
    (so an empty answer there is isolation, not a broken route)."""
    for market in (world.alpha, world.beta):
        base = f"http://{market.host}"
        found = await client.get(f"{base}/marketplace/search", params={"q": market.word})
        assert {item["id"] for item in found.json()["results"]} == set(market.products)
        product = await client.get(f"{base}/products/{market.products[1]}")
        assert product.status_code == 200
        store = await client.get(f"{base}/stores/shared-shop")
        assert store.status_code == 200 and market.products[2] in store.text
        assert (await client.get(f"{base}/stores/{market.only_store}")).status_code == 200
        home = await client.get(f"{base}/marketplace/home")
        assert home.status_code == 200 and market.products[0] in home.text
        order = await client.get(f"{base}/purchases/{market.order}", headers=market.buyer())
        assert order.status_code == 200


async def test_live_channels_of_the_other_tenant_are_not_found(
    app_role_url: str, world: World
) -> None:
    """On a WebSocket to b's host: a's product and order are `*_not_found`, a's token does
    not authenticate, b's own channels answer their state; an unknown host is refused 404."""
    a, b = world.alpha, world.beta
    services = Services.from_settings(multi_settings(app_role_url))
    with serve_in_thread(create_gateway(services)) as url:
        port = int(url.rsplit(":", 1)[1])

        def on(host: str) -> Any:
            return connect(f"ws://{host}:{port}/ws", host="127.0.0.1", port=port)

        async with on(b.host) as ws:

            async def ask(message: dict[str, str]) -> dict[str, Any]:
                await ws.send(json.dumps(message))
                answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
                return answer

            product = f"product:{a.products[0]}"
            assert await ask({"action": "subscribe", "channel": product}) == {
                "type": "error",
                "code": "product_not_found",
                "channel": product,
            }
            bearer = a.buyer()["Authorization"].removeprefix("Bearer ")
            assert await ask({"action": "auth", "token": bearer}) == {
                "type": "error",
                "code": "unauthorized",
            }
            await ws.send(json.dumps({"action": "auth", "token": b.buyer()["Authorization"][7:]}))
            theirs = await ask({"action": "subscribe", "channel": f"order:{a.order}"})
            assert theirs["code"] == "order_not_found"
            own = await ask({"action": "subscribe", "channel": f"order:{b.order}"})
            assert own["type"] == "order" and own["data"]["id"] == b.order
            stock = await ask({"action": "subscribe", "channel": f"product:{b.products[1]}"})
            assert stock["type"] == "stock" and stock["data"]["product_id"] == b.products[1]
        with pytest.raises(InvalidStatus) as refused:
            async with on("nowhere.test"):
                pass
        assert refused.value.response.status_code == 404
        assert json.loads(refused.value.response.body)["code"] == "tenant_not_found"

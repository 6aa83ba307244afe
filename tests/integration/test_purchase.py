"""POST /purchases and friends: every documented outcome, and real concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for, unused_port
from tests.support.purchases import (
    failures,
    fund,
    gateway,
    new_product,
    one_unit_to_buy,
    place_orders,
    product_for,
    store_owner,
)
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def client(catalog_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(catalog_database_url) as http:
        yield http


async def test_order_placed_and_ledger(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    product = product_for(url, "ann", stock=5, price=2500)
    response = await client.post(
        "/purchases", json={"product_id": product, "quantity": 2}, headers=headers("ann")
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "completed" and order["failure_code"] is None
    assert (order["quantity"], order["unit_price_cents"], order["total_cents"]) == (2, 2500, 5000)
    assert sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product) == [(3, 2)]
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'ann'") == [(5000,)]
    (payout,) = sql(
        url, "SELECT amount_cents, fee_cents FROM payouts WHERE order_id = %s", order["id"]
    )
    assert payout[0] + payout[1] == 5000 and payout[1] == 500  # 10% platform fee
    assert sql(url, "SELECT count(*) FROM audit_log WHERE entity_id = %s", order["id"]) == [(1,)]
    fetched = await client.get(f"/purchases/{order['id']}", headers=auth("ann"))
    assert fetched.status_code == 200 and fetched.json() == order
    for other in (auth("bob"), auth("root", roles=["admin"])):
        hidden = await client.get(f"/purchases/{order['id']}", headers=other)
        assert hidden.status_code == 404 and hidden.json()["code"] == "order_not_found"
    assert (await client.get("/purchases/not-a-uuid", headers=auth("ann"))).status_code == 422
    wallet = await client.get("/wallet", headers=auth("ann"))
    assert wallet.json() == {"sub": "ann", "balance_cents": 5000}
    assert (await client.get("/wallet", headers=auth("nobody"))).json()["balance_cents"] == 0


async def test_replay_reuse_and_in_progress(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    _, key, body = one_unit_to_buy(url, "cat", stock=10)
    first = await client.post("/purchases", json=body, headers=headers("cat", key))
    again = await client.post("/purchases", json=body, headers=headers("cat", key))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    changed = await client.post(
        "/purchases", json={**body, "quantity": 2}, headers=headers("cat", key)
    )
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    assert sql(url, "SELECT count(*) FROM orders WHERE idempotency_key = %s", key) == [(1,)]
    busy_key = uuid.uuid4().hex
    with psycopg.connect(url) as holder:  # a first request still running under this key
        holder.execute(
            "SELECT pg_advisory_xact_lock(idempotency_lock_key(current_tenant_id(), 'cat', %s))",
            [busy_key],
        )
        busy = await client.post("/purchases", json=body, headers=headers("cat", busy_key))
    assert busy.status_code == 409 and busy.json()["code"] == "idempotency_key_in_use"


async def test_keys_belong_to_their_user(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """The same key from two users is two unrelated keys: each gets its own outcome and
    replay, whichever came first, and one user's running request does not hold up the
    other's."""
    url = catalog_database_url
    product = new_product(url, stock=100, price=100)
    users = [f"keyed-{index}" for index in range(8)]
    for user in users:
        fund(url, user, 10_000)

    async def buy(user: str, key: str, quantity: int = 1) -> httpx.Response:
        body = {"product_id": product, "quantity": quantity}
        return await client.post("/purchases", json=body, headers=headers(user, key))

    # One after the other, with different bodies: the second user's is not "reused".
    key = uuid.uuid4().hex
    first, second = await buy(users[0], key), await buy(users[1], key, quantity=2)
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert "idempotent-replayed" not in second.headers
    assert (first.json()["quantity"], second.json()["quantity"]) == (1, 2)
    # All at once: every user's request is a purchase of its own.
    shared = uuid.uuid4().hex
    together = await asyncio.gather(*(buy(user, shared) for user in users))
    assert [r.status_code for r in together] == [201] * len(users), [r.text for r in together]
    assert len({r.json()["id"] for r in together}) == len(users)
    # A replay by each user returns that user's own order.
    placements = [(users[0], key, first), (users[1], key, second)]
    placements += [(user, shared, placed) for user, placed in zip(users, together, strict=True)]
    for user, used, placed in placements:
        replay = await buy(user, used, quantity=placed.json()["quantity"])
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == placed.json()
        owner = sql(url, "SELECT user_sub FROM orders WHERE id = %s", placed.json()["id"])
        assert owner == [(user,)]
    orders = sql(
        url,
        "SELECT user_sub, idempotency_key, count(*) FROM orders WHERE product_id = %s "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        product,
    )
    assert orders == sorted(
        [(users[0], key, 1), (users[1], key, 1)] + [(user, shared, 1) for user in users]
    )
    # Another user's request running under the same key does not make this one wait.
    running = uuid.uuid4().hex
    with psycopg.connect(url) as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(idempotency_lock_key(current_tenant_id(), %s, %s))",
            [users[0], running],
        )
        other = await buy(users[1], running)
        blocked = await buy(users[0], running)
    assert other.status_code == 201, other.text
    assert blocked.status_code == 409 and blocked.json()["code"] == "idempotency_key_in_use"
    assert (await buy(users[0], running)).status_code == 201


def test_the_key_lock_cannot_be_forged_with_a_separator(catalog_database_url: str) -> None:
    """(user, key) pairs that one joined string would confuse are different locks."""
    pairs = [("a:b", "c"), ("a", "b:c"), ("ab", "c"), ("a", "bc"), ("", "abc"), ("abc", "")]
    locks = sql(
        catalog_database_url,
        "SELECT idempotency_lock_key(current_tenant_id(), u, k) "
        "FROM unnest(%s::text[], %s::text[]) AS t (u, k)",
        [user for user, _ in pairs],
        [key for _, key in pairs],
    )
    assert len({lock for (lock,) in locks}) == len(pairs)


async def test_business_failures_are_stored_and_recorded(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    fund(url, "eve", 1500)
    cases = [
        ({"product_id": str(uuid.uuid4()), "quantity": 1}, 404, "product_not_found", False),
        (
            {"product_id": new_product(url, stock=5, available=False), "quantity": 1},
            404,
            "product_not_found",
            False,
        ),
        (
            {"product_id": new_product(url, stock=1, price=100), "quantity": 2},
            409,
            "out_of_stock",
            True,
        ),
        (
            {
                "product_id": new_product(url, stock=5),
                "quantity": 1,
                "expected_unit_price_cents": 999,
            },
            409,
            "price_changed",
            True,
        ),
        (
            {"product_id": new_product(url, stock=5, price=1000), "quantity": 2},
            402,
            "insufficient_funds",
            True,
        ),
    ]
    for body, status, code, recorded in cases:
        key = uuid.uuid4().hex
        response = await client.post("/purchases", json=body, headers=headers("eve", key))
        assert (response.status_code, response.json()["code"]) == (status, code), body
        replay = await client.post("/purchases", json=body, headers=headers("eve", key))
        assert replay.status_code == status and replay.json() == response.json()
        assert replay.headers["idempotent-replayed"] == "true"
        assert failures(url, key) == ([code] if recorded else [])
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'eve'") == [(1500,)]
    assert sql(url, "SELECT count(*) FROM orders WHERE user_sub = 'eve'") == [(0,)]


async def test_a_seller_cannot_buy_their_own_product(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """Refused 409 before anything is written (whatever the stock or price), stored under the
    key and replayed, and recorded like out_of_stock; anyone else can buy the product."""
    url = catalog_database_url
    owner = store_owner(url)
    product = product_for(url, owner, stock=1, price=700)
    fund(url, "not-the-owner", 10_000)
    for body in (
        {"product_id": product, "quantity": 1},
        {"product_id": product, "quantity": 2},  # more than the stock
        {"product_id": product, "quantity": 1, "expected_unit_price_cents": 699},
    ):
        key = uuid.uuid4().hex
        refused = await client.post("/purchases", json=body, headers=headers(owner, key))
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert problem["code"] == "cannot_buy_own_product"
        assert problem["title"] == "Cannot buy own product"
        assert refused.headers["content-type"] == "application/problem+json"
        replay = await client.post("/purchases", json=body, headers=headers(owner, key))
        assert replay.status_code == 409 and replay.json() == problem
        assert replay.headers["idempotent-replayed"] == "true"
        assert failures(url, key) == ["cannot_buy_own_product"]
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", owner) == [(10_000,)]
    assert sql(url, "SELECT count(*) FROM orders WHERE user_sub = %s", owner) == [(0,)]
    assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(1,)]
    bought = await client.post(
        "/purchases",
        json={"product_id": product, "quantity": 1},
        headers=headers("not-the-owner"),
    )
    assert bought.status_code == 201, bought.text


@pytest.mark.parametrize(
    ("bps", "fees"),
    [
        (1000, {4: 0, 5: 1, 14: 1, 15: 2, 2500: 250}),
        (0, {1: 0, 5: 0, 15: 0, 2500: 0}),
        (10_000, {1: 1, 5: 5, 2500: 2500}),
    ],
)
async def test_the_platform_fee_rounds_half_up_to_the_cent(
    catalog_database_url: str, bps: int, fees: dict[int, int]
) -> None:
    """fee = total * bps / 10000 rounded half up; the payout is the rest of the total."""
    url = catalog_database_url
    buyer = f"fee-buyer-{bps}"
    fund(url, buyer, 100_000)
    async with gateway(url, platform_fee_basis_points=bps) as http:
        for total, fee in fees.items():
            product = new_product(url, stock=1, price=total)
            response = await http.post(
                "/purchases", json={"product_id": product, "quantity": 1}, headers=headers(buyer)
            )
            assert response.status_code == 201, response.text
            order = response.json()["id"]
            ((order_total, amount, paid_fee, audited),) = sql(
                url,
                "SELECT o.total_cents, p.amount_cents, p.fee_cents, "
                "(a.details->>'fee_cents')::bigint FROM orders o "
                "JOIN payouts p ON p.order_id = o.id "
                "JOIN audit_log a ON a.entity_type = 'order' AND a.entity_id = o.id::text "
                "WHERE o.id = %s",
                order,
            )
            assert (order_total, paid_fee, audited) == (total, fee, fee), (bps, total)
            assert amount + paid_fee == order_total


async def test_one_currency_per_marketplace(catalog_database_url: str) -> None:
    """A product listed in another currency than the marketplace's is not for sale (404, as
    unavailable, nothing written); an order records the currency it was charged in."""
    url = catalog_database_url
    fund(url, "euro-buyer", 10_000)
    async with gateway(url, marketplace_currency="EUR") as http:
        euros = new_product(url, stock=3, price=1000, currency="EUR")
        dollars = new_product(url, stock=3, price=1000, currency="USD")
        bought = await http.post(
            "/purchases", json={"product_id": euros, "quantity": 1}, headers=headers("euro-buyer")
        )
        assert bought.status_code == 201, bought.text
        assert sql(url, "SELECT currency FROM orders WHERE id = %s", bought.json()["id"]) == [
            ("EUR",)
        ]
        key = uuid.uuid4().hex
        refused = await http.post(
            "/purchases",
            json={"product_id": dollars, "quantity": 1},
            headers=headers("euro-buyer", key),
        )
    assert refused.status_code == 404 and refused.json()["code"] == "product_not_found"
    assert failures(url, key) == []
    assert sql(url, "SELECT stock FROM products WHERE id = %s", dollars) == [(3,)]
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'euro-buyer'") == [(9000,)]


async def test_a_product_in_yen_is_not_bought_from_a_dollar_wallet(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    fund(url, "dollar-buyer", 10_000)
    yen = new_product(url, stock=3, price=100, currency="JPY")
    refused = await client.post(
        "/purchases", json={"product_id": yen, "quantity": 1}, headers=headers("dollar-buyer")
    )
    assert refused.status_code == 404 and refused.json()["code"] == "product_not_found"
    dollars = new_product(url, stock=3, price=100)
    bought = await client.post(
        "/purchases", json={"product_id": dollars, "quantity": 1}, headers=headers("dollar-buyer")
    )
    assert bought.status_code == 201
    assert sql(url, "SELECT currency FROM orders WHERE id = %s", bought.json()["id"]) == [("USD",)]
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'dollar-buyer'") == [
        (9900,)
    ]


async def test_kill_switch_releases_the_key(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    _, key, body = one_unit_to_buy(url, "fay", stock=5)
    sql(url, "UPDATE kill_switches SET enabled = true WHERE name = 'purchases'")
    try:
        refused = await client.post("/purchases", json=body, headers=headers("fay", key))
    finally:
        sql(url, "UPDATE kill_switches SET enabled = false WHERE name = 'purchases'")
    assert refused.status_code == 503 and refused.json()["code"] == "purchases_disabled"
    assert int(refused.headers["retry-after"]) >= 1
    assert failures(url, key) == ["purchases_disabled"]
    retried = await client.post("/purchases", json=body, headers=headers("fay", key))
    assert retried.status_code == 201  # a 503 stored nothing under the key


@pytest.mark.parametrize(
    ("extra_headers", "body", "status", "code"),
    [
        ({"Idempotency-Key": None}, {"quantity": 1}, 400, "idempotency_key_required"),
        ({"Idempotency-Key": ""}, {"quantity": 1}, 400, "idempotency_key_required"),
        ({"Idempotency-Key": "k" * 256}, {"quantity": 1}, 400, "invalid_idempotency_key"),
        ({"Idempotency-Key": "café".encode()}, {"quantity": 1}, 400, "invalid_idempotency_key"),
        ({"Idempotency-Key": "a\tb"}, {"quantity": 1}, 400, "invalid_idempotency_key"),
        ({}, {"quantity": "1"}, 422, "validation_error"),
        ({}, {"quantity": 1.5}, 422, "validation_error"),
        ({}, {"quantity": 11}, 422, "validation_error"),
        ({}, {"product_id": "nope", "quantity": 1}, 422, "validation_error"),
        ({"Authorization": None}, {"quantity": 1}, 401, "unauthorized"),
    ],
)
async def test_refusals_before_any_work(
    client: httpx.AsyncClient,
    catalog_database_url: str,
    extra_headers: dict[str, Any],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    request_headers: dict[str, Any] = {**headers("gus"), **extra_headers}
    request_headers = {k: v for k, v in request_headers.items() if v is not None}
    payload = {"product_id": str(uuid.uuid4()), **body}
    response = await client.post("/purchases", json=payload, headers=request_headers)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert sql(
        catalog_database_url, "SELECT count(*) FROM failed_transactions WHERE user_sub = 'gus'"
    ) == [(0,)]


async def test_database_unavailable_is_503_read_only(catalog_database_url: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{unused_port()}/postgres?connect_timeout=1"
    services = Services.from_settings(settings_for(dead, jwt_secret=SECRET, db_pool_timeout_s=1.0))
    async with open_gateway(services, base_url="http://t") as http:
        response = await http.post(
            "/purchases",
            json={"product_id": str(uuid.uuid4()), "quantity": 1},
            headers=headers("hal"),
        )
    assert response.status_code == 503 and response.json()["code"] == "read_only_mode"
    assert response.headers["retry-after"] == "5"


async def test_200_buyers_race_for_50_units(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=50, price=700)
    for index in range(200):
        fund(url, f"racer-{index}", 10_000)
    responses = await asyncio.gather(
        *(
            client.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers=headers(f"racer-{index}"),
            )
            for index in range(200)
        )
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 50, 409: 150}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"out_of_stock"}
    assert sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product) == [(0, 50)]
    assert sql(
        url, "SELECT count(*), sum(total_cents) FROM orders WHERE product_id = %s", product
    ) == [(50, 35_000)]
    debited = sql(
        url, "SELECT sum(10000 - balance_cents) FROM wallets WHERE user_sub LIKE 'racer-%%'"
    )
    assert debited == [(35_000,)]


async def test_50_requests_with_one_key_make_one_order(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    url = catalog_database_url
    _, key, body = one_unit_to_buy(url, "ivy", stock=100, funds=100_000)
    responses = await asyncio.gather(
        *(client.post("/purchases", json=body, headers=headers("ivy", key)) for _ in range(50))
    )
    assert sql(url, "SELECT count(*) FROM orders WHERE idempotency_key = %s", key) == [(1,)]
    placed = [r for r in responses if r.status_code == 201]
    assert placed and all(r.json() == placed[0].json() for r in placed)
    assert {r.status_code for r in responses} <= {201, 409}
    assert sum(1 for r in placed if "idempotent-replayed" not in r.headers) == 1


@pytest.fixture
def fault_on(catalog_database_url: str) -> Any:
    """Install a trigger that fails (or stalls) a purchase of one product right after its stock
    UPDATE: the wallet debit, the order, payout, audit and key rows are written, the row lock
    is held, and only the commit is left."""

    def install(product: str, *, action: str) -> None:
        body = (
            "RAISE EXCEPTION 'injected fault'"
            if action == "raise"
            # nextval is not rolled back with the killed transaction: only the first stalls.
            else "IF nextval('test_fault_once') = 1 THEN PERFORM pg_sleep(5); END IF"
        )
        sql(catalog_database_url, "DROP SEQUENCE IF EXISTS test_fault_once")
        sql(catalog_database_url, "CREATE SEQUENCE test_fault_once")
        sql(
            catalog_database_url,
            f"""
            CREATE OR REPLACE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.id = '{product}' AND NEW.stock < OLD.stock THEN {body}; END IF;
                RETURN NEW;
            END $$;
            CREATE OR REPLACE TRIGGER test_fault AFTER UPDATE ON products
                FOR EACH ROW EXECUTE FUNCTION test_fault();""",
        )

    yield install
    sql(catalog_database_url, "DROP TRIGGER IF EXISTS test_fault ON products")


def snapshot(url: str, product: str, buyer: str) -> tuple[Any, ...]:
    return (
        sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product),
        sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", buyer),
        sql(url, "SELECT count(*) FROM orders WHERE product_id = %s", product),
        sql(
            url,
            "SELECT count(*) FROM payouts p JOIN orders o ON o.id = p.order_id "
            "WHERE o.product_id = %s",
            product,
        ),
    )


async def test_a_fault_before_commit_leaves_nothing_but_a_failure_row(
    client: httpx.AsyncClient, catalog_database_url: str, fault_on: Any
) -> None:
    url = catalog_database_url
    product, key, body = one_unit_to_buy(url, "jon", stock=5)
    before = snapshot(url, product, "jon")
    fault_on(product, action="raise")
    response = await client.post("/purchases", json=body, headers=headers("jon", key))
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert "injected" not in response.text
    assert snapshot(url, product, "jon") == before
    assert failures(url, key) == ["internal_error"]
    sql(url, "DROP TRIGGER test_fault ON products")
    retried = await client.post("/purchases", json=body, headers=headers("jon", key))
    assert retried.status_code == 201  # the 500 released the key


async def test_a_killed_connection_mid_purchase_is_retried_once(
    client: httpx.AsyncClient, catalog_database_url: str, fault_on: Any
) -> None:
    """The first attempt stalls after the stock update and its connection is killed: it
    rolls back, the retry (same key) completes, and exactly one purchase happens."""
    url = catalog_database_url
    product, key, body = one_unit_to_buy(url, "kim", stock=5)
    fault_on(product, action="stall")
    request = asyncio.create_task(client.post("/purchases", json=body, headers=headers("kim", key)))
    for _ in range(200):  # wait until the purchase is stalled inside its transaction
        stalled = sql(
            url,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE '%%FROM purchase(%%' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        if stalled:
            break
        await asyncio.sleep(0.02)
    assert stalled, "the purchase never reached the fault"
    sql(url, "SELECT pg_terminate_backend(%s)", stalled[0][0])
    response = await request
    assert response.status_code == 201, response.text
    assert sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product) == [(4, 1)]
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'kim'") == [(9000,)]
    assert sql(url, "SELECT count(*) FROM orders WHERE idempotency_key = %s", key) == [(1,)]
    assert failures(url, key) == []


async def rows_within_5_s(url: str, statement: str, *args: Any) -> Any:
    """The statement's rows once it returns any, polled for up to 5 s; [] if it never does."""
    for _ in range(250):
        if rows := sql(url, statement, *args):
            return rows
        await asyncio.sleep(0.02)
    return []


async def wait_for_lock_wait(url: str) -> None:
    assert await rows_within_5_s(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE '%%FROM purchase(%%' AND wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()",
    ), "the purchase never waited for the product's row lock"


@pytest.mark.parametrize(
    ("change", "expected_price", "outcome"),
    [
        ("price_cents = 1500", None, (201, None)),  # bought again, at the price it is now
        ("price_cents = 1500", 1000, (409, "price_changed")),
        ("stock = 0", None, (409, "out_of_stock")),
        ("is_available = false", None, (404, "product_not_found")),
        ("currency = 'JPY'", None, (404, "product_not_found")),  # relisted in another currency
    ],
)
async def test_a_product_changed_while_buying_is_decided_as_it_is_now(
    client: httpx.AsyncClient,
    catalog_database_url: str,
    change: str,
    expected_price: int | None,
    outcome: tuple[int, str | None],
) -> None:
    """purchase() reads the product, debits and writes everything, and takes the row lock
    last. A seller's change committed in between (held here under the row lock until the
    purchase waits for it) must decide the outcome, with the debit and rows undone."""
    url = catalog_database_url
    buyer = f"racer-{uuid.uuid4().hex[:8]}"
    product, key, body = one_unit_to_buy(url, buyer, stock=5, price=1000)
    if expected_price is not None:
        body["expected_unit_price_cents"] = expected_price
    with psycopg.connect(url) as seller:
        seller.execute(f"UPDATE products SET {change} WHERE id = %s", [product])
        request = asyncio.create_task(
            client.post("/purchases", json=body, headers=headers(buyer, key))
        )
        await wait_for_lock_wait(url)
        seller.commit()
    response = await request
    status, code = outcome
    assert response.status_code == status, response.text
    balance = sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = %s", buyer)[0][0]
    orders = sql(url, "SELECT unit_price_cents FROM orders WHERE idempotency_key = %s", key)
    if status == 201:
        assert response.json()["unit_price_cents"] == 1500
        assert (balance, orders) == (8500, [(1500,)])
        assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(4,)]
        assert failures(url, key) == []
    else:
        assert response.json()["code"] == code
        assert (balance, orders) == (10_000, [])
        assert failures(url, key) == ([] if status == 404 else [code])
    if code == "price_changed":
        assert response.json()["current_unit_price_cents"] == 1500


async def test_buyers_of_one_product_queue_on_its_queue_lock(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """purchase() takes the product's queue lock (purchase_queue_key) just before its stock
    UPDATE: a purchase waits for whoever holds it, with its other rows written but the stock
    untouched, and completes when it is released."""
    url = catalog_database_url
    product, key, body = one_unit_to_buy(url, "queuer", stock=5)
    with psycopg.connect(url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(purchase_queue_key(%s))", [product])
        request = asyncio.create_task(
            client.post("/purchases", json=body, headers=headers("queuer", key))
        )
        # pg_locks shows a bigint advisory key as its high (classid) and low (objid) halves.
        waiting = await rows_within_5_s(
            url,
            "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE a.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted "
            "AND (l.classid::bigint << 32 | l.objid::bigint) = purchase_queue_key(%s)",
            product,
        )
        assert waiting and "purchase(" in waiting[0][0], "no purchase waited for the queue lock"
        assert not request.done()
        assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(5,)]
        holder.commit()
    response = await request
    assert response.status_code == 201, response.text
    assert sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product) == [(4, 1)]


async def test_a_key_claimed_yesterday_is_still_found(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """Partitions are daily: a duplicate just after midnight must find yesterday's claim."""
    url = catalog_database_url
    _, key, body = one_unit_to_buy(url, "lou", stock=5)
    first = await client.post("/purchases", json=body, headers=headers("lou", key))
    assert first.status_code == 201
    # Move the claim into yesterday's partition, as if made at 23:59:59 UTC.
    sql(
        url,
        "UPDATE idempotency_keys SET created_at = date_trunc('day', now() AT TIME ZONE 'UTC') "
        "AT TIME ZONE 'UTC' - interval '1 second' WHERE key = %s",
        key,
    )
    partition = sql(
        url, "SELECT tableoid::regclass::text FROM idempotency_keys WHERE key = %s", key
    )
    yesterday = sql(
        url,
        "SELECT 'idempotency_keys_' || to_char((now() AT TIME ZONE 'UTC')::date - 1, 'YYYYMMDD')",
    )
    assert partition == yesterday
    replay = await client.post("/purchases", json=body, headers=headers("lou", key))
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert sql(url, "SELECT count(*) FROM orders WHERE idempotency_key = %s", key) == [(1,)]


async def test_randomised_mixed_run_keeps_the_ledger_balanced(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    import random

    url = catalog_database_url
    rng = random.Random(7)
    users = [f"mixed-{index}" for index in range(30)]
    for user in users:
        fund(url, user, rng.choice([500, 3_000, 20_000]))
    start_balance = dict(
        sql(url, "SELECT user_sub, balance_cents FROM wallets WHERE user_sub LIKE 'mixed-%%'")
    )
    products = [new_product(url, stock=20, price=rng.choice([300, 900, 1500])) for _ in range(10)]
    sent: list[tuple[str, str, dict[str, Any]]] = []

    async def one(index: int) -> None:
        if sent and rng.random() < 0.2:
            user, key, body = rng.choice(sent)  # a retry of an earlier request
        else:
            user, key = rng.choice(users), uuid.uuid4().hex
            body = {"product_id": rng.choice(products), "quantity": rng.randint(1, 3)}
            sent.append((user, key, body))
        request = client.post("/purchases", json=body, headers=headers(user, key))
        if rng.random() < 0.1:
            try:  # the client gives up early; it will retry the same key later
                await asyncio.wait_for(request, timeout=0.002)
            except TimeoutError:
                sent.append((user, key, body))
            return
        response = await request
        assert response.status_code in (201, 402, 409), response.text

    await asyncio.gather(*(one(index) for index in range(300)))
    for user, key, body in sent:  # every key once more: all must replay or complete cleanly
        response = await client.post("/purchases", json=body, headers=headers(user, key))
        assert response.status_code in (201, 402, 409)

    rows = sql(
        url,
        "SELECT o.total_cents, o.unit_price_cents * o.quantity, p.amount_cents + "
        "p.fee_cents, p.store_id = o.store_id FROM orders o JOIN payouts p "
        "ON p.order_id = o.id WHERE o.user_sub LIKE 'mixed-%%' AND o.status = 'completed'",
    )
    assert rows and all(total == computed == paid for total, computed, paid, _ in rows)
    assert all(same_store for *_, same_store in rows)
    orders_total = sum(total for total, *_ in rows)
    end_balance = dict(
        sql(url, "SELECT user_sub, balance_cents FROM wallets WHERE user_sub LIKE 'mixed-%%'")
    )
    assert sum(start_balance[u] - end_balance[u] for u in users) == orders_total
    for product in products:
        ((stock, sold),) = sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product)
        ordered = sql(
            url, "SELECT coalesce(sum(quantity), 0) FROM orders WHERE product_id = %s", product
        )[0][0]
        assert stock + sold == 20 and sold == ordered
    keys = {key for _, key, _ in sent}
    duplicates = sql(
        url,
        "SELECT idempotency_key FROM orders WHERE idempotency_key = ANY(%s) "
        "GROUP BY idempotency_key HAVING count(*) > 1",
        list(keys),
    )
    assert duplicates == []


def request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


async def send_twice(
    client: httpx.AsyncClient, user: str, body: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    """One purchase and its retry (same key, same body), each with an X-Request-ID of its own."""
    key = uuid.uuid4().hex
    first, replay = [
        await client.post(
            "/purchases", json=body, headers={**headers(user, key), "X-Request-ID": request_id()}
        )
        for _ in range(2)
    ]
    return first, replay


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    """The one replay rule: the original body byte for byte, this request's own X-Request-ID,
    and headers that say it is a replay and of which request."""
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["original-request-id"] == first.headers["x-request-id"]
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]
    assert replay.headers["cache-control"] == first.headers["cache-control"] == "no-store"
    assert "idempotent-replayed" not in first.headers
    assert "original-request-id" not in first.headers
    if first.headers["content-type"] == "application/problem+json":
        assert replay.json()["request_id"] == first.headers["x-request-id"]


async def test_a_replay_is_the_original_response_with_its_request_named(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """201, 402, 404 and each 409 refusal: a retry answers the first response's body byte for
    byte (a problem keeps the first request's id), under its own X-Request-ID, with
    Idempotent-Replayed and Original-Request-ID; 201 carries Location, replayed too."""
    url = catalog_database_url
    fund(url, "replayer", 1500)
    owner = store_owner(url)
    fund(url, owner, 10_000)
    cases = [
        ("replayer", {"product_id": new_product(url, stock=5, price=500), "quantity": 1}, 201),
        ("replayer", {"product_id": new_product(url, stock=5, price=800), "quantity": 2}, 402),
        ("replayer", {"product_id": str(uuid.uuid4()), "quantity": 1}, 404),
        ("replayer", {"product_id": new_product(url, stock=1, price=100), "quantity": 2}, 409),
        (
            "replayer",
            {
                "product_id": new_product(url, stock=5, price=300),
                "quantity": 1,
                "expected_unit_price_cents": 299,
            },
            409,
        ),
        (owner, {"product_id": new_product(url, stock=5, price=100), "quantity": 1}, 409),
    ]
    for user, body, status in cases:
        first, replay = await send_twice(client, user, body)
        assert first.status_code == status, first.text
        assert_replay_of(replay, first)
        if status == 201:
            assert first.headers["location"] == f"/purchases/{first.json()['id']}"
            assert replay.headers["location"] == first.headers["location"]
        else:
            assert "location" not in first.headers
    assert sql(url, "SELECT balance_cents FROM wallets WHERE user_sub = 'replayer'") == [(1000,)]


async def pages(client: httpx.AsyncClient, user: str, limit: int) -> list[dict[str, Any]]:
    """Every page of the user's orders, following next_cursor to the end."""
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(100):
        page = await client.get("/purchases", params=params, headers=auth(user))
        assert page.status_code == 200, page.text
        assert page.headers["cache-control"] == "no-store"
        document = page.json()
        assert set(document) == {"orders", "next_cursor"}
        assert len(document["orders"]) <= limit
        seen.extend(document["orders"])
        if document["next_cursor"] is None:
            return seen
        params = {"limit": limit, "cursor": document["next_cursor"]}
    raise AssertionError("the pages never ended")


async def test_a_buyer_pages_their_orders_newest_first(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    """GET /purchases: the caller's orders only, newest first and, within one instant, by id
    descending, in pages that never repeat or skip an order; each is the document GET
    /purchases/{id} answers."""
    url = catalog_database_url
    instants = ["2024-05-01T10:00:00Z"] * 4 + ["2024-05-02T10:00:00.000001Z"] * 3
    instants += ["2024-04-30T09:00:00Z", "2024-05-03T00:00:00Z"]
    ids = place_orders(url, "pager", instants)
    place_orders(url, "someone-else", ["2024-05-02T10:00:00Z"])
    expected = [
        row[0]
        for row in sql(
            url,
            "SELECT id::text FROM orders WHERE user_sub = 'pager' "
            "ORDER BY created_at DESC, id DESC",
        )
    ]
    assert sorted(expected) == sorted(ids)
    for limit in (1, 2, 4, 9, 50):
        listed = await pages(client, "pager", limit)
        assert [order["id"] for order in listed] == expected, limit
    default = (await client.get("/purchases", headers=auth("pager"))).json()
    assert [order["id"] for order in default["orders"]] == expected
    assert default["next_cursor"] is None
    for order in default["orders"]:
        single = await client.get(f"/purchases/{order['id']}", headers=auth("pager"))
        assert single.json() == order
    empty = await client.get("/purchases", headers=auth("no-orders-yet"))
    assert empty.json() == {"orders": [], "next_cursor": None}


async def test_order_pages_refuse_bad_queries_and_foreign_cursors(
    client: httpx.AsyncClient, catalog_database_url: str
) -> None:
    place_orders(catalog_database_url, "cursor-owner", ["2024-05-01T10:00:00Z"] * 3)
    first = await client.get("/purchases", params={"limit": 1}, headers=auth("cursor-owner"))
    cursor = first.json()["next_cursor"]
    assert cursor
    payload, signature = cursor.split(".")
    for params, who in [
        ({"cursor": cursor}, "cursor-thief"),  # another user's cursor
        ({"cursor": f"{payload}x.{signature}"}, "cursor-owner"),  # tampered
        ({"cursor": "not-a-cursor"}, "cursor-owner"),
        ({"limit": "0"}, "cursor-owner"),
        ({"limit": "51"}, "cursor-owner"),
        ({"limit": "ten"}, "cursor-owner"),
        ({"page": "2"}, "cursor-owner"),  # unknown parameter
    ]:
        refused = await client.get("/purchases", params=params, headers=auth(who))
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["code"] == "validation_error"
        assert refused.headers["content-type"] == "application/problem+json"
    assert (await client.get("/purchases")).status_code == 401


def test_order_pages_walk_one_index_without_sorting(catalog_database_url: str) -> None:
    """The page after a cursor is an index range on (user_sub, created_at, id) read backwards:
    no sort, however many orders share the cursor's instant."""
    from functions.purchase.app import NEXT_ORDERS_SQL

    with psycopg.connect(catalog_database_url) as conn:
        # With few rows any plan is cheap: take the planner's other choices away, so the test
        # asks whether the index can serve the order at all (a sort stays possible, at a cost).
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(f"SET {setting} = off".encode())
        statement = b"EXPLAIN " + NEXT_ORDERS_SQL
        args = ["pager", "2024-05-01T10:00:00Z", str(uuid.uuid4()), 21]
        text = "\n".join(row[0] for row in conn.execute(statement, args).fetchall())
    assert "Index Scan Backward using orders_user_created_id_idx" in text, text
    assert "Sort" not in text, text

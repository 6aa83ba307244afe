"""Queued mode end to end: POST /purchases on a hot product answers 202 and sends an SQS
message (moto), the worker applies the queue in batches against the real database, and a
replayed batch changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgemart.purchasequeue import SqsPurchaseQueue
from edgemart.services import Services
from edgemart.settings import RATE_LIMIT_GROUPS
from functions.order_worker.app import order_worker
from gateway.app import create_gateway
from gateway.sqspoller import apply_batch, receive_batch
from tests.conftest import serve_in_thread, settings_for
from tests.support.purchases import failures, fund, new_product, product_for, store_owner
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers

pytestmark = pytest.mark.anyio
SQS_RECORD = json.loads(
    (Path(__file__).parents[1] / "events/sqs_receive_message.json").read_text()
)["Records"][0]


@pytest.fixture
def queue_url(aws: None) -> str:
    import boto3

    url: str = boto3.client("sqs").create_queue(QueueName="purchases")["QueueUrl"]
    return url


def queued_services(url: str, queue_url: str, **overrides: Any) -> Services:
    return Services.from_settings(
        settings_for(
            url,
            **{
                "jwt_secret": SECRET,
                "purchase_queue_url": queue_url,
                "rate_limit_overrides": (("purchases", 0, 60),),
                "db_pool_max_size": 20,
                **overrides,
            },
        )
    )


@pytest.fixture
async def services(catalog_database_url: str, queue_url: str) -> AsyncIterator[Services]:
    services = queued_services(catalog_database_url, queue_url)
    yield services
    await services.aclose()


async def drain(services: Services, batch_size: int) -> list[dict[str, Any]]:
    """Receive and apply until the queue is empty, through the gateway's poller pieces;
    returns the batches (Lambda SQS events) applied."""
    queue = services.purchase_queue
    assert isinstance(queue, SqsPurchaseQueue)
    batches: list[dict[str, Any]] = []
    while messages := await receive_batch(queue, batch_size):
        event, failed = await apply_batch(services, queue, messages)
        assert failed == set(), event
        batches.append(event)
    return batches


def ledger(url: str, product: str) -> dict[str, Any]:
    ((stock, sold),) = sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product)
    statuses = dict(
        sql(url, "SELECT status, count(*) FROM orders WHERE product_id = %s GROUP BY 1", product)
    )
    ((debited, totals, unbalanced),) = sql(
        url,
        "SELECT (SELECT 100 * 10000 - sum(balance_cents) FROM wallets "
        "WHERE user_sub LIKE 'hot-buyer-%%'), "
        "(SELECT sum(total_cents) FROM orders WHERE product_id = %s AND status = 'completed'), "
        "(SELECT count(*) FROM orders o JOIN payouts p ON p.order_id = o.id "
        "WHERE o.product_id = %s AND (o.total_cents <> p.amount_cents + p.fee_cents "
        "OR p.store_id <> o.store_id))",
        product,
        product,
    )
    return {
        "stock": stock,
        "sold": sold,
        "statuses": statuses,
        "debited": debited,
        "completed_totals": totals,
        "unbalanced": unbalanced,
    }


async def test_a_thousand_queued_purchases_of_three_hundred_units(
    catalog_database_url: str, services: Services
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=300, price=1000)
    sql(url, "UPDATE products SET purchase_mode = 'queued' WHERE id = %s", product)
    for index in range(100):
        fund(url, f"hot-buyer-{index}", 10_000)  # enough for 10 units each
    transport = httpx.ASGITransport(app=create_gateway(services))
    limit = asyncio.Semaphore(32)

    async def buy(client: httpx.AsyncClient, index: int) -> httpx.Response:
        async with limit:
            return await client.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers=headers(f"hot-buyer-{index % 100}", f"hot-{index}"),
            )

    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(buy(client, i) for i in range(1000)))
        assert Counter(r.status_code for r in responses) == {202: 1000}
        assert {r.json()["status"] for r in responses} == {"queued"}
        before_worker = ledger(url, product)
        assert (before_worker["stock"], before_worker["statuses"]) == (300, {"queued": 1000})

        batches = await drain(services, batch_size=50)
        after = ledger(url, product)
        assert after["stock"] == 0 and after["sold"] == 300
        assert after["statuses"] == {"completed": 300, "failed": 700}
        assert after["debited"] == after["completed_totals"] == 300 * 1000
        assert after["unbalanced"] == 0

        # Redelivery: the same batch again changes nothing.
        replayed = await order_worker(services, batches[0])
        assert replayed["batchItemFailures"] == []
        assert ledger(url, product) == after

        # Buyers see the outcome; a retried request replays its 202.
        first = responses[0].json()
        order = await client.get(f"/purchases/{first['id']}", headers=auth("hot-buyer-0"))
        assert order.json()["status"] in ("completed", "failed")
        failed = sql(
            url,
            "SELECT id::text, user_sub FROM orders WHERE product_id = %s AND status = 'failed' "
            "LIMIT 1",
            product,
        )[0]
        seen = await client.get(f"/purchases/{failed[0]}", headers=auth(str(failed[1])))
        assert (seen.json()["status"], seen.json()["failure_code"]) == ("failed", "out_of_stock")
        again = await client.post(
            "/purchases",
            json={"product_id": product, "quantity": 1},
            headers=headers("hot-buyer-0", "hot-0"),
        )
        assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert ledger(url, product) == after


async def test_an_admin_switches_a_product_to_queued_mode(
    catalog_database_url: str, services: Services
) -> None:
    """With a purchase queue configured, PUT purchase-mode `queued` is stored and audited, and
    the next purchase of the product is queued: 202 with Location, replayed by the one rule
    (original body byte for byte, Idempotent-Replayed, Original-Request-ID)."""
    url = catalog_database_url
    product = product_for(url, "queued-by-admin", stock=5)
    transport = httpx.ASGITransport(app=create_gateway(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        switched = await client.put(
            f"/admin/products/{product}/purchase-mode",
            headers=auth("root", roles=["admin"]),
            json={"mode": "queued"},
        )
        assert switched.status_code == 200, switched.text
        assert switched.json() == {"product_id": product, "mode": "queued"}
        key = uuid.uuid4().hex
        body = {"product_id": product, "quantity": 1}
        placed, replay = [
            await client.post(
                "/purchases",
                json=body,
                headers={**headers("queued-by-admin", key), "X-Request-ID": f"queued-{n}"},
            )
            for n in (1, 2)
        ]
    assert sql(url, "SELECT purchase_mode FROM products WHERE id = %s", product) == [("queued",)]
    audited = sql(
        url,
        "SELECT actor_sub, details FROM audit_log WHERE action = 'product.purchase_mode' "
        "AND entity_id = %s",
        product,
    )
    assert audited == [("root", {"mode": "queued"})]
    assert placed.status_code == 202, placed.text
    assert placed.headers["location"] == f"/purchases/{placed.json()['id']}"
    assert replay.status_code == 202 and replay.content == placed.content
    assert replay.headers["location"] == placed.headers["location"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["original-request-id"] == "queued-1"
    assert replay.headers["x-request-id"] == "queued-2"
    assert replay.headers["cache-control"] == "no-store"
    assert len(await drain(services, batch_size=10)) == 1


async def test_refusals_before_enqueueing(catalog_database_url: str, services: Services) -> None:
    """In queued mode too, a store's owner buying its product is refused 409 (recorded and
    replayed) and a product listed in another currency is 404, before any order is stored or
    message sent; two users sharing a key each get their own queued order."""
    url = catalog_database_url
    owner = store_owner(url)
    product = new_product(url, stock=5, price=1000)
    yen = new_product(url, stock=5, price=1000, currency="JPY")
    sql(
        url,
        "UPDATE products SET purchase_mode = 'queued' WHERE id = ANY(%s::uuid[])",
        [product, yen],
    )
    for buyer in (owner, "queued-a", "queued-b"):
        fund(url, buyer, 10_000)
    transport = httpx.ASGITransport(app=create_gateway(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        key = uuid.uuid4().hex
        body = {"product_id": product, "quantity": 1}
        own = await client.post("/purchases", json=body, headers=headers(owner, key))
        assert own.status_code == 409 and own.json()["code"] == "cannot_buy_own_product"
        replay = await client.post("/purchases", json=body, headers=headers(owner, key))
        assert replay.json() == own.json() and replay.headers["idempotent-replayed"] == "true"
        assert failures(url, key) == ["cannot_buy_own_product"]
        foreign = await client.post(
            "/purchases", json={"product_id": yen, "quantity": 1}, headers=headers("queued-a")
        )
        assert foreign.status_code == 404 and foreign.json()["code"] == "product_not_found"
        both = [product, yen]
        stored = sql(url, "SELECT count(*) FROM orders WHERE product_id = ANY(%s::uuid[])", both)
        assert stored == [(0,)]
        assert await drain(services, batch_size=10) == []  # nothing was sent
        shared = uuid.uuid4().hex
        queued = [
            await client.post("/purchases", json=body, headers=headers(buyer, shared))
            for buyer in ("queued-a", "queued-b")
        ]
    assert [r.status_code for r in queued] == [202, 202], [r.text for r in queued]
    owners = sql(url, "SELECT user_sub FROM orders WHERE idempotency_key = %s", shared)
    assert sorted(owners) == [("queued-a",), ("queued-b",)]


async def test_a_queued_order_pays_the_rounded_fee_in_the_marketplace_currency(
    catalog_database_url: str, queue_url: str
) -> None:
    """A 5-cent order at 10%: the worker takes a fee of 1 cent (half up), pays the store 4,
    and the order is in the marketplace's currency."""
    url = catalog_database_url
    product = new_product(url, stock=5, price=5, currency="EUR")
    sql(url, "UPDATE products SET purchase_mode = 'queued' WHERE id = %s", product)
    fund(url, "queued-fee-buyer", 10_000)
    services = queued_services(url, queue_url, marketplace_currency="EUR")
    try:
        transport = httpx.ASGITransport(app=create_gateway(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            placed = await client.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers=headers("queued-fee-buyer"),
            )
        assert placed.status_code == 202, placed.text
        assert len(await drain(services, batch_size=10)) == 1
    finally:
        await services.aclose()
    rows = sql(
        url,
        "SELECT o.status, o.currency, o.total_cents, p.amount_cents, p.fee_cents FROM orders o "
        "JOIN payouts p ON p.order_id = o.id WHERE o.id = %s",
        placed.json()["id"],
    )
    assert rows == [("completed", "EUR", 5, 4, 1)]


async def test_concurrent_workers_and_redeliveries_sell_each_unit_once(
    catalog_database_url: str, services: Services
) -> None:
    """Lambda runs several batches of one hot product at once, and SQS may deliver a batch
    twice. 600 orders of 250 units in batches of 50, each batch delivered twice, applied by 4
    workers at once: every batch goes through (no deadlock between batches sharing buyers),
    exactly 250 units are sold, every order is decided once and the ledger balances. Batches
    that read the stock before another took it retry with the product locked first."""
    url = catalog_database_url
    product = new_product(url, stock=250, price=700)
    buyers = [f"race-buyer-{index}" for index in range(40)]
    for buyer in buyers:
        fund(url, buyer, 700 * 15)
    order_ids = [
        row[0]
        for row in sql(
            url,
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key) SELECT 'race-buyer-' || (n %% 40), id, "
            "store_id, 1, price_cents, price_cents, 'queued', 'race-' || n "
            "FROM products, generate_series(1, 600) n WHERE id = %s ORDER BY n "
            "RETURNING id::text",
            product,
        )
    ]
    events = [
        {
            "Records": [
                {
                    **SQS_RECORD,
                    "messageId": order_id,
                    "body": json.dumps({"order_id": order_id, "product_id": product}),
                }
                for order_id in order_ids[start : start + 50]
            ]
        }
        for start in range(0, 600, 50)
    ]
    deliveries = events + events[::-1]  # each batch twice, the copies late and out of order

    async def worker() -> None:
        while deliveries:
            response = await order_worker(services, deliveries.pop())
            assert response["batchItemFailures"] == []

    await asyncio.gather(*(worker() for _ in range(4)))
    ((stock, sold),) = sql(url, "SELECT stock, sold_count FROM products WHERE id = %s", product)
    statuses = dict(
        sql(url, "SELECT status, count(*) FROM orders WHERE product_id = %s GROUP BY 1", product)
    )
    assert (stock, sold, statuses) == (0, 250, {"completed": 250, "failed": 350})
    ((spent,),) = sql(
        url,
        "SELECT 40 * 700 * 15 - sum(balance_cents) FROM wallets WHERE user_sub LIKE 'race-%%'",
    )
    ((payouts, paid_orders, amounts),) = sql(
        url,
        "SELECT count(*), count(DISTINCT p.order_id), sum(p.amount_cents + p.fee_cents) "
        "FROM payouts p JOIN orders o ON o.id = p.order_id "
        "WHERE o.product_id = %s AND p.store_id = o.store_id",
        product,
    )
    assert spent == amounts == 250 * 700 and payouts == paid_orders == 250
    ((refusals,),) = sql(
        url,
        "SELECT count(*) FROM failed_transactions WHERE product_id = %s "
        "AND error_code = 'out_of_stock'",
        product,
    )
    assert refusals == 350


async def test_failed_records_are_reported_back(
    catalog_database_url: str, services: Services
) -> None:
    url = catalog_database_url
    product = product_for(url, "batch-buyer", stock=5, funds=100_000)
    ((order_id,),) = sql(
        url,
        "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
        "total_cents, status, idempotency_key) SELECT 'batch-buyer', id, store_id, 1, "
        "price_cents, price_cents, 'queued', 'batch-key' FROM products WHERE id = %s "
        "RETURNING id::text",
        product,
    )
    unknown_order = str(uuid.uuid4())  # its purchase has not committed (or rolled back)
    records = [
        {
            **SQS_RECORD,
            "messageId": "good",
            "body": json.dumps({"order_id": order_id, "product_id": product}),
        },
        {**SQS_RECORD, "messageId": "not-ours", "body": "Hello from SQS!"},
        {  # shaped like ours, but not a UUID: refused alone, not failing its product's group
            **SQS_RECORD,
            "messageId": "bad-id",
            "body": json.dumps({"order_id": "1}, {2", "product_id": product}),
        },
        {
            **SQS_RECORD,
            "messageId": "not-yet",
            "body": json.dumps({"order_id": unknown_order, "product_id": product}),
        },
    ]
    response = await order_worker(services, {"Records": records})
    assert sorted(item["itemIdentifier"] for item in response["batchItemFailures"]) == [
        "bad-id",
        "not-ours",
        "not-yet",
    ]
    assert sql(url, "SELECT status FROM orders WHERE id = %s", order_id) == [("completed",)]


async def test_a_buyer_who_cannot_pay_frees_stock_for_the_next_order(
    catalog_database_url: str, services: Services
) -> None:
    """Stock 3, four orders in a batch; the second buyer cannot pay: orders 1, 3 and 4
    complete (the refused order's unit goes to the fourth), first come first served."""
    url = catalog_database_url
    product = new_product(url, stock=3, price=1000)
    buyers = ["fifo-a", "fifo-poor", "fifo-c", "fifo-d"]
    for buyer in buyers:
        fund(url, buyer, 500 if buyer == "fifo-poor" else 10_000)
    order_ids = []
    for index, buyer in enumerate(buyers):
        ((order_id,),) = sql(
            url,
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key, created_at) SELECT %s, id, store_id, 1, "
            "price_cents, price_cents, 'queued', %s, now() + %s * interval '1 ms' "
            "FROM products WHERE id = %s RETURNING id::text",
            buyer,
            f"fifo-{index}",
            index,
            product,
        )
        order_ids.append(order_id)
    records = [
        {
            **SQS_RECORD,
            "messageId": f"m{index}",
            "body": json.dumps({"order_id": order_id, "product_id": product}),
        }
        for index, order_id in enumerate(reversed(order_ids))  # arrival order is created_at
    ]
    response = await order_worker(services, {"Records": records})
    assert response["batchItemFailures"] == []
    outcomes = dict(
        sql(
            url,
            "SELECT user_sub, coalesce(failure_code, status) FROM orders WHERE product_id = %s",
            product,
        )
    )
    assert outcomes == {
        "fifo-a": "completed",
        "fifo-poor": "insufficient_funds",
        "fifo-c": "completed",
        "fifo-d": "completed",
    }
    assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(0,)]
    balances = dict(
        sql(url, "SELECT user_sub, balance_cents FROM wallets WHERE user_sub LIKE 'fifo-%%'")
    )
    assert balances == {"fifo-a": 9000, "fifo-poor": 500, "fifo-c": 9000, "fifo-d": 9000}


def test_the_gateway_applies_its_queue_itself(catalog_database_url: str, queue_url: str) -> None:
    """`edgemart serve` with a queue configured: the scheduler polls it and runs the worker,
    so a queued order completes without AWS."""
    url = catalog_database_url
    product = new_product(url, stock=2, price=1000)
    sql(url, "UPDATE products SET purchase_mode = 'queued' WHERE id = %s", product)
    fund(url, "local-buyer", 10_000)
    services = Services.from_settings(
        settings_for(
            url,
            jwt_secret=SECRET,
            purchase_queue_url=queue_url,
            rate_limit_overrides=tuple((group, 0, 60) for group in RATE_LIMIT_GROUPS),
        )
    )
    with serve_in_thread(create_gateway(services, run_schedules=True)) as base:
        with httpx.Client(base_url=base, timeout=10) as client:
            placed = [
                client.post(
                    "/purchases",
                    json={"product_id": product, "quantity": 1},
                    headers=headers("local-buyer"),
                )
                for _ in range(3)
            ]
            assert [r.status_code for r in placed] == [202, 202, 202]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                statuses = [
                    client.get(f"/purchases/{r.json()['id']}", headers=auth("local-buyer")).json()[
                        "status"
                    ]
                    for r in placed
                ]
                if "queued" not in statuses:
                    break
                time.sleep(0.2)
    assert sorted(statuses) == ["completed", "completed", "failed"]
    assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(0,)]

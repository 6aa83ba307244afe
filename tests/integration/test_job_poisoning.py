"""No bad input breaks a job: every buffer and queue the jobs read is poisoned with every
kind of bad value, mixed with good entries, and the next run must still do everything else.

- refresh_views, with the memory buffers and with the Redis buffers (raw fields written
  straight into the Redis hashes): the views are refreshed, the snapshot written, the good
  counts flushed; the bad entries are gone from the buffers, not re-queued, and counted.
  Requests that fail record nothing in the first place.
- order_worker: SQS records whose bodies are garbage, of the wrong type or name unknown
  orders, mixed with good ones: the good orders are applied, the bad records reported back.
- score_listings: listings with extreme fields are scored like the rest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgemart import metrics
from edgemart.counters import (
    BufferedCounts,
    MemoryCounts,
    RedisCounts,
    client_hash,
)
from edgemart.redisclient import LazyRedis
from edgemart.services import Services
from functions.order_worker.app import order_worker
from functions.refresh_views.app import refresh_views
from functions.score_listings.app import score_listings
from gateway.app import create_gateway
from tests.conftest import settings_for
from tests.support.purchases import fund, new_product
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth

pytestmark = pytest.mark.anyio
EVENTS = Path(__file__).parents[1] / "events"
EVENT = json.loads((EVENTS / "eventbridge_scheduled.json").read_text())
SQS_RECORD = json.loads((EVENTS / "sqs_receive_message.json").read_text())["Records"][0]
BUFFERS = ("search_counts", "view_counts", "search_history")
BIGINT_MAX = 2**63 - 1
KB4 = 4096

Raw = tuple[bytes, bytes]  # (field, value) as a Redis hash holds them


def _field(value: Any) -> bytes:
    return json.dumps(value).encode()


def poisoned_search_counts(client: str) -> list[Raw]:
    return [
        (b"\xff\xfe", b"1"),  # not UTF-8
        (b"\xed\xa0\x80", b"1"),  # a surrogate, UTF-8-encoded: not UTF-8 either
        (_field(["nul\x00here", client]), b"1"),
        (_field(["lone \ud800 surrogate", client]), b"1"),
        (_field(["bell\x07and\x1b[31m", client]), b"1"),
        (_field(["x" * KB4, client]), b"1"),
        (b"y" * KB4, b"1"),
        (b'["lamp", ', b"1"),  # malformed JSON
        (b"[" * KB4, b"1"),  # nested deeper than JSON parsing goes
        (b"lamp", b"1"),  # the old form: a bare query
        (b'["lamp", 5]', b"1"),
        (b'{"query": "lamp"}', b"1"),
        (b"[]", b"1"),
        (_field(["lamp", "198.51.100.1"]), b"1"),  # a raw address, not a client hash
        (_field(["Lamp  ", client]), b"1"),  # not normalised
        (_field(["", client]), b"1"),
        (_field(["chair", client]), b"many"),  # non-integer counts
        (_field(["desk", client]), b"1.5"),
        (_field(["stool", client]), b""),
        (_field(["sofa", client]), str(2**70).encode()),  # does not fit bigint
        (_field(["bed", client]), b"0"),
        (_field(["rug", client]), b"-3"),
    ]


def poisoned_view_counts(products: list[str], overflowing: str) -> list[Raw]:
    return [
        (b"\xff" + products[0].encode(), b"1"),  # not UTF-8
        (b"not-a-uuid", b"1"),
        (b"\x00", b"1"),
        (b"x" * KB4, b"1"),
        (str(uuid.uuid4()).encode(), b"5"),  # a UUID no product has
        (products[1].upper().encode(), b"1"),  # not canonical
        (("{" + products[2] + "}").encode(), b"1"),
        (("urn:uuid:" + products[2]).encode(), b"1"),
        (products[3].encode(), b"lots"),
        (products[4].encode(), str(2**70).encode()),
        (products[5].encode(), b"-1"),
        (products[6].encode(), b"0"),
        (overflowing.encode(), b"100"),  # passes every check; the database refuses the sum
    ]


def poisoned_search_history() -> list[Raw]:
    return [
        (b"victim\x1fold form", b"1"),  # the old separator form
        (_field(["mallory\x1fvictim", "lamp"]), b"1"),
        (_field(["", "lamp"]), b"1"),
        (_field(["s" * 300, "lamp"]), b"1"),
        (_field(["nul\x00user", "lamp"]), b"1"),
        (_field(["lone\udc00", "lamp"]), b"1"),
        (_field(["poison-user", "nul\x00query"]), b"1"),
        (_field(["poison-user", "z" * KB4]), b"1"),
        (_field(["poison-user", "tab\tquery"]), b"1"),
        (_field([123, "lamp"]), b"1"),
        (_field(["poison-user"]), b"1"),
        (b"\x80\x81", b"1"),
        (b'["poison-user", "lamp"', b"1"),
        (_field(["poison-user", "counted badly"]), b"NaN"),
        (_field(["poison-user", "counted hugely"]), str(2**64).encode()),
    ]


async def poison_redis(redis: LazyRedis, key: str, raw: list[Raw]) -> int:
    await redis.client().hset(key, mapping=dict(raw))
    return len(raw)


async def poison_memory(buffer: BufferedCounts, raw: list[Raw]) -> int:
    """What a process's memory can hold: str names and int counts (the rest only Redis can).
    Lone surrogates can be held here unencoded."""
    counts: dict[str, int] = {}
    for name, value in raw:
        try:
            counts[name.decode()] = int(value)
        except ValueError:
            continue
    counts["raw lone \ud800 surrogate"] = 1
    await buffer.restore(counts)
    return len(counts)


@pytest.fixture(params=["memory", "redis"])
async def services(
    request: pytest.FixtureRequest, catalog_database_url: str, redis_url: str
) -> AsyncIterator[Services]:
    services = Services.from_settings(
        settings_for(
            catalog_database_url,
            jwt_secret=SECRET,
            cursor_secret="poisoning-tests",
            rate_limit_overrides=tuple((g, 0, 60) for g in ("search", "store")),
        )
    )
    if request.param == "redis":  # keys of this test's own, on the real Redis
        redis = LazyRedis(redis_url)
        prefix = f"edgemart-test:{uuid.uuid4().hex}"
        services.search_counts = RedisCounts(redis, f"{prefix}:search_counts")
        services.view_counts = RedisCounts(redis, f"{prefix}:view_counts")
        services.search_history = RedisCounts(redis, f"{prefix}:search_history")
    yield services
    await services.aclose()


def buffer_of(services: Services, name: str) -> BufferedCounts:
    buffer: BufferedCounts = getattr(services, name)
    return buffer


async def test_refresh_views_survives_every_poisoned_buffer(
    services: Services, catalog_database_url: str
) -> None:
    url = catalog_database_url
    kind = "redis" if isinstance(services.search_counts, RedisCounts) else "memory"
    user = f"poison-user-{kind}"
    products = [row[0] for row in sql(url, "SELECT id::text FROM products ORDER BY id LIMIT 8")]
    viewed, overflowing = products[0], products[7]
    sql(url, "UPDATE products SET view_count = %s WHERE id = %s", BIGINT_MAX - 50, overflowing)
    app = create_gateway(services)

    def at(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip, 1))
        return httpx.AsyncClient(transport=transport, base_url="http://t")

    # Requests that fail record nothing, and neither does text the database cannot store or
    # that no search should hold (whatever the status: a NUL fails the query today and is
    # refused by parsing later).
    async with at("198.51.100.200") as client:
        for q in ("\x00", "lamp\x00", "lamp\x07", "   "):
            await client.get("/marketplace/search", params={"q": q})
        refused = await client.get(
            "/marketplace/search", params={"q": "lamp"}, headers={"Authorization": "Bearer x"}
        )
        assert refused.status_code == 401
        assert (await client.get(f"/products/{uuid.uuid4()}")).status_code == 404
        assert (await client.get("/products/not-a-uuid")).status_code == 422
    for name in BUFFERS:
        assert await buffer_of(services, name).drain() == {}, name

    # Good entries, through the gateway.
    octet = 1 if kind == "memory" else 2
    for index in range(2):
        async with at(f"198.51.{octet}.{index + 1}") as client:
            assert (await client.get("/marketplace/search", params={"q": "oak"})).status_code == 200
    async with at("198.51.100.201") as client:
        signed_in = await client.get(
            "/marketplace/search", params={"q": "linen"}, headers=auth(user)
        )
        assert signed_in.status_code == 200
        for _ in range(3):
            assert (await client.get(f"/products/{viewed}")).status_code == 200

    # Then every kind of bad value, straight into the buffers.
    client = client_hash(None, "198.51.100.9", "poisoning-tests")
    assert client is not None
    raw = {
        "search_counts": poisoned_search_counts(client),
        "view_counts": poisoned_view_counts(products, overflowing),
        "search_history": poisoned_search_history(),
    }
    bad = 0
    for name, entries in raw.items():
        buffer = buffer_of(services, name)
        if isinstance(buffer, RedisCounts):
            bad += await poison_redis(buffer.redis, buffer.key, entries)
        else:
            assert isinstance(buffer, MemoryCounts)
            bad += await poison_memory(buffer, entries)

    oak_before = _total(url, "oak")
    views_before = _views(url, viewed)
    sql(url, "UPDATE products SET sold_count = 88888888 WHERE id = %s", products[1])
    generated_before = sql(url, "SELECT generated_at FROM home_snapshot WHERE id = 1")
    dropped_before = metrics.count(metrics.COUNTER_ENTRIES_DROPPED)

    report = await refresh_views(services, EVENT)

    assert report["status"] == "refreshed" and report["failed_steps"] == [], report
    assert sql(url, "SELECT max(sold_count) FROM home_products") == [(88888888,)]
    assert sql(url, "SELECT generated_at FROM home_snapshot WHERE id = 1") != generated_before
    assert _total(url, "oak") == oak_before + 2
    assert _views(url, viewed) == views_before + 3
    assert _views(url, overflowing) == BIGINT_MAX - 50
    assert sql(url, "SELECT query FROM search_history WHERE user_sub = %s", user) == [("linen",)]
    assert sql(url, "SELECT count(*) FROM search_history WHERE user_sub LIKE '%%victim%%'") == [
        (0,)
    ]
    assert metrics.count(metrics.COUNTER_ENTRIES_DROPPED) == dropped_before + bad
    for name in BUFFERS:
        assert await buffer_of(services, name).drain() == {}, name  # gone, not re-queued

    again = await refresh_views(services, EVENT)
    assert again["status"] == "refreshed"
    assert metrics.count(metrics.COUNTER_ENTRIES_DROPPED) == dropped_before + bad


def _total(url: str, query: str) -> int:
    rows = sql(url, "SELECT total_count FROM popular_searches WHERE query = %s", query)
    return int(rows[0][0]) if rows else 0


def _views(url: str, product: str) -> int:
    return int(sql(url, "SELECT view_count FROM products WHERE id = %s", product)[0][0])


async def test_order_worker_applies_good_records_and_reports_bad_ones(
    catalog_database_url: str,
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=10)
    other_product = new_product(url, stock=10)
    good_orders = []
    for index in range(2):
        buyer = f"poison-buyer-{index}"
        fund(url, buyer, 100_000)
        ((order_id,),) = sql(
            url,
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key) SELECT %s, id, store_id, 1, price_cents, "
            "price_cents, 'queued', %s FROM products WHERE id = %s RETURNING id::text",
            buyer,
            f"poison-key-{uuid.uuid4().hex}",
            product,
        )
        good_orders.append(order_id)

    def message(message_id: str, body: Any) -> dict[str, Any]:
        return {**SQS_RECORD, "messageId": message_id, "body": body}

    def purchase(order_id: object, product_id: object) -> str:
        return json.dumps({"order_id": order_id, "product_id": product_id})

    bad = [
        message("empty", ""),
        message("garbage", "\x00\xff\ud800 not json"),
        message("null", "null"),
        message("list", "[1, 2]"),
        message("numbers", purchase(5, 5)),
        message("nulls", purchase(None, None)),
        message("nested", purchase({"id": 1}, [product])),
        message("not-uuids", purchase("1}, {2", product)),
        message("huge", purchase("x" * 300_000, product)),
        message("unknown-order", purchase(str(uuid.uuid4()), product)),
        message("unknown-both", purchase(str(uuid.uuid4()), str(uuid.uuid4()))),
        message("wrong-product", purchase(good_orders[0], other_product)),
        message("body-none", None),
        message("body-int", 123),
        message("body-object", {"order_id": good_orders[0], "product_id": product}),
    ]
    good = [message(f"good-{i}", purchase(order, product)) for i, order in enumerate(good_orders)]
    records = bad[:7] + good[:1] + bad[7:] + good[1:]  # good ones among the bad

    response = await _run_order_worker(url, records)

    failed = sorted(item["itemIdentifier"] for item in response["batchItemFailures"])
    assert failed == sorted(record["messageId"] for record in bad)
    statuses = sql(url, "SELECT status FROM orders WHERE id = ANY(%s::uuid[])", good_orders)
    assert statuses == [("completed",), ("completed",)]
    assert sql(url, "SELECT stock FROM products WHERE id = %s", product) == [(8,)]


async def _run_order_worker(url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    services = Services.from_settings(settings_for(url))
    try:
        return await order_worker(services, {"Records": records})
    finally:
        await services.aclose()


async def test_score_listings_scores_extreme_listings_with_the_rest(
    catalog_database_url: str,
) -> None:
    """The schema bounds a price to 1..1e9 and a description to 5000 characters (0 and NUL
    cannot be stored): the listings sit on those bounds and beyond every other norm."""
    url = catalog_database_url
    sql(url, "UPDATE products SET quality_score = 40 WHERE quality_score IS NULL")
    description = ("FREE!!! $$$ call +1 555 0100 now " + "\x07\x1b\u202e😀 " * 300)[:5000]
    extremes = [
        ("x" * 200, description, 1, 0),
        ("!" * 200, "", 1_000_000_000, 2_147_483_647),
        ("😀" * 200, "1" * 5000, 1, 2_147_483_647),
        ("A", " " * 5000, 1_000_000_000, 0),
        ("Solid oak desk", "A sturdy oak desk, 120 x 60 cm, two drawers.", 24_900, 5),
    ]
    ids = [
        sql(
            url,
            "INSERT INTO products (store_id, category_id, name, description, price_cents, stock) "
            "SELECT id, 1, %s, %s, %s, %s FROM stores ORDER BY slug LIMIT 1 RETURNING id::text",
            *listing,
        )[0][0]
        for listing in extremes
    ]
    services = Services.from_settings(settings_for(url))
    try:
        report = await score_listings(services, EVENT)
    finally:
        await services.aclose()
    assert report["claimed"] == len(ids) and report["failed"] == 0, report
    scores = sql(
        url, "SELECT quality_score, score_source FROM products WHERE id = ANY(%s::uuid[])", ids
    )
    assert len(scores) == len(ids)
    for score, source in scores:
        assert 0 <= score <= 100 and source in ("model", "heuristic")
    assert sql(url, "SELECT count(*) FROM products WHERE quality_score IS NULL") == [(0,)]

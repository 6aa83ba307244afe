"""The WebSocket API's function (functions/realtime) invoked through its Lambda handler with
API Gateway WebSocket event JSON, and the committing functions posting to its connections:
through moto's `apigatewaymanagementapi`, and through a local stand-in for the answers moto
never gives (a gone connection, throttling)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import functions.purchase.app as purchase_function
from edgemart.settings import Settings
from functions.order_worker.app import order_worker
from functions.realtime.app import realtime
from tests.apigw_management import ManagementStub, management_stub
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    installed_services,
    job_handler_on,
    load_event,
    sqs_event_with_a_queued_order,
    with_request,
)
from tests.support.purchases import fund, new_product
from tests.support.tokens import SECRET, auth

pytestmark = pytest.mark.live
MOTO_ENDPOINT = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/live"


def event(route: str, connection: str, body: Any = None, *, ip: str = "203.0.113.9") -> Any:
    name = {"$connect": "connect", "$disconnect": "disconnect", "$default": "message"}[route]
    sent = copy.deepcopy(load_event(f"apigw_websocket_{name}.json"))
    sent["requestContext"]["connectionId"] = connection
    sent["requestContext"]["identity"]["sourceIp"] = ip
    if body is not None:
        sent["body"] = body if isinstance(body, str) else json.dumps(body)
    return sent


def frames(data: bytes | list[str]) -> list[dict[str, Any]]:
    """The frames posted to one connection (moto keeps them run together)."""
    text = data.decode() if isinstance(data, bytes) else "".join(data)
    decoder, found, index = json.JSONDecoder(), [], 0
    while index < len(text):
        document, index = decoder.raw_decode(text, index)
        found.append(document)
    return found


def moto_posted(connection: str) -> list[dict[str, Any]]:
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    return frames(backend.connections[connection].data)


def token(sub: str) -> str:
    return auth(sub)["Authorization"].removeprefix("Bearer ")


def rows(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement.encode(), args).fetchall()


def live_settings(url: str, endpoint: str, **more: Any) -> Settings:
    return settings_for(url, jwt_secret=SECRET, ws_api_endpoint=endpoint, **more)


def buy_one(settings: Settings, buyer: str, product: str, *, idempotency_key: str) -> None:
    """One unit of `product` bought through the purchase function's Lambda handler."""
    with installed_services(purchase_function.app, settings):
        request = with_request(
            load_event("apigw_v2_post_purchases.json"),
            {**auth(buyer), "Idempotency-Key": idempotency_key, "Content-Type": "application/json"},
            {"product_id": product, "quantity": 1},
        )
        assert purchase_function.handler(request, FakeLambdaContext())["statusCode"] == 201


@pytest.fixture
def moto_realtime(aws: None, catalog_database_url: str) -> Iterator[Any]:
    with job_handler_on(realtime, live_settings(catalog_database_url, MOTO_ENDPOINT)) as handler:
        yield handler


def test_connect_subscribe_and_a_purchase_posts_through_the_management_api(
    moto_realtime: Any, catalog_database_url: str
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=4)
    fund(url, "ws-lambda-buyer", 100_000)
    channel = f"product:{product}"
    assert moto_realtime(event("$connect", "conn-watch"), FakeLambdaContext()) == {
        "statusCode": 200
    }
    subscribe = {"action": "subscribe", "channel": channel}
    assert moto_realtime(event("$default", "conn-watch", subscribe), FakeLambdaContext()) == {
        "statusCode": 200
    }
    state = {
        "type": "stock",
        "channel": channel,
        "data": {"product_id": product, "stock_available": 4, "in_stock": True},
    }
    assert moto_posted("conn-watch") == [state]

    settings = live_settings(url, MOTO_ENDPOINT)
    buy_one(settings, "ws-lambda-buyer", product, idempotency_key="ws-1")
    assert moto_posted("conn-watch")[1:] == [
        {**state, "data": {"product_id": product, "stock_available": 3, "in_stock": True}}
    ]

    assert moto_realtime(event("$disconnect", "conn-watch"), FakeLambdaContext()) == {
        "statusCode": 200
    }
    assert rows(url, "SELECT * FROM live_subscriptions WHERE connection_id = 'conn-watch'") == []


def test_a_queued_batch_posts_the_orders_final_status(
    moto_realtime: Any, catalog_database_url: str
) -> None:
    url = catalog_database_url
    batch, order = sqs_event_with_a_queued_order(url, "ws-queued-buyer", 1_000_000)
    moto_realtime(event("$connect", "conn-order"), FakeLambdaContext())
    for body in (
        {"action": "subscribe", "channel": f"order:{order}"},  # not authenticated yet
        {"action": "auth", "token": token("ws-queued-buyer")},
        {"action": "subscribe", "channel": f"order:{order}"},
    ):
        moto_realtime(event("$default", "conn-order", body), FakeLambdaContext())
    refused, queued = moto_posted("conn-order")
    assert refused == {"type": "error", "code": "unauthorized", "channel": f"order:{order}"}
    assert (queued["type"], queued["data"]["status"]) == ("order", "queued")

    with job_handler_on(order_worker, live_settings(url, MOTO_ENDPOINT)) as worker:
        worker(batch, FakeLambdaContext())
    pushed = moto_posted("conn-order")[2:]
    assert [(m["type"], m["data"]["id"], m["data"]["status"]) for m in pushed] == [
        ("order", order, "completed")
    ]


def test_protocol_errors_limits_and_the_flood(
    moto_realtime: Any, catalog_database_url: str
) -> None:
    url = catalog_database_url
    moto_realtime(event("$connect", "conn-errors"), FakeLambdaContext())
    binary = event("$default", "conn-errors", base64.b64encode(b'{"action":"ping"}').decode())
    binary["isBase64Encoded"] = True
    moto_realtime(binary, FakeLambdaContext())
    for body in ("not json", {"action": "dance"}, {"action": "subscribe", "channel": "order:1"}):
        moto_realtime(event("$default", "conn-errors", body), FakeLambdaContext())
    moto_realtime(event("$default", "conn-errors", {"action": "ping"}), FakeLambdaContext())
    posted = moto_posted("conn-errors")
    assert [m.get("code") for m in posted[:4]] == ["invalid_message"] * 4
    assert posted[4] == {"type": "pong"}
    for _ in range(6):  # ten invalid frames within the window
        moto_realtime(event("$default", "conn-errors", "{"), FakeLambdaContext())
    assert rows(url, "SELECT 1 FROM live_connections WHERE connection_id = 'conn-errors'") == []


def test_subscriptions_and_connections_are_limited(aws: None, catalog_database_url: str) -> None:
    url = catalog_database_url
    products = [
        row[0]
        for row in rows(
            url,
            "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
            "WHERE p.is_available AND p.is_approved AND s.is_active ORDER BY p.id LIMIT 51",
        )
    ]
    settings = live_settings(url, MOTO_ENDPOINT, ws_max_connections_per_client=2)
    with job_handler_on(realtime, settings) as handler:
        for connection in ("conn-limit-1", "conn-limit-2"):
            assert (
                handler(event("$connect", connection, ip="198.51.100.7"), FakeLambdaContext())[
                    "statusCode"
                ]
                == 200
            )
        refused = handler(event("$connect", "conn-limit-3", ip="198.51.100.7"), FakeLambdaContext())
        assert refused["statusCode"] == 429
        assert json.loads(refused["body"])["code"] == "too_many_connections"
        for product in products:
            body = {"action": "subscribe", "channel": f"product:{product}"}
            handler(event("$default", "conn-limit-1", body), FakeLambdaContext())
    posted = moto_posted("conn-limit-1")
    assert [m["type"] for m in posted[:50]] == ["stock"] * 50
    assert posted[50] == {
        "type": "error",
        "code": "too_many_subscriptions",
        "channel": f"product:{products[50]}",
    }


@pytest.fixture
def stub(aws_credentials: None) -> Iterator[ManagementStub]:
    with management_stub() as running:
        yield running


def test_a_gone_connection_is_deleted_and_throttling_is_retried(
    stub: ManagementStub, catalog_database_url: str
) -> None:
    url = catalog_database_url
    product = new_product(url, stock=9)
    fund(url, "ws-gone-buyer", 100_000)
    settings = live_settings(url, stub.url)
    with job_handler_on(realtime, settings) as handler:
        for connection in ("conn-gone", "conn-slow"):
            handler(event("$connect", connection), FakeLambdaContext())
            body = {"action": "subscribe", "channel": f"product:{product}"}
            handler(event("$default", connection, body), FakeLambdaContext())
    stub.gone.add("conn-gone")
    stub.throttle["conn-slow"] = 2
    buy_one(settings, "ws-gone-buyer", product, idempotency_key="ws-g")
    assert [m["data"]["stock_available"] for m in frames(stub.posted["conn-slow"])] == [9, 8]
    assert stub.throttle["conn-slow"] == 0  # refused twice, then sent
    assert rows(url, "SELECT 1 FROM live_connections WHERE connection_id = 'conn-gone'") == []
    assert rows(url, "SELECT 1 FROM live_subscriptions WHERE connection_id = 'conn-gone'") == []
    assert rows(url, "SELECT 1 FROM live_connections WHERE connection_id = 'conn-slow'") != []


def test_in_multi_mode_a_connection_belongs_to_its_host_s_tenant(
    aws: None, catalog_database_url: str
) -> None:
    """`$connect` resolves the tenant from the host the client connected with (a custom
    domain per marketplace), as a request's; an unknown host is refused 404."""
    url = catalog_database_url
    (tenant,) = rows(
        url, "INSERT INTO tenants (slug, name) VALUES ('ws-shop', 'WS') RETURNING id::text"
    )[0]
    rows(url, "INSERT INTO tenant_domains VALUES ('ws.shop.test', %s) RETURNING 1", tenant)
    settings = live_settings(url, MOTO_ENDPOINT, tenancy="multi")
    with job_handler_on(realtime, settings) as handler:
        unknown = event("$connect", "conn-nowhere")
        unknown["headers"]["Host"] = "nowhere.test"
        refused = handler(unknown, FakeLambdaContext())
        assert refused["statusCode"] == 404
        assert json.loads(refused["body"])["code"] == "tenant_not_found"
        known = event("$connect", "conn-shop")
        known["headers"]["Host"] = "WS.Shop.test:443"
        assert handler(known, FakeLambdaContext())["statusCode"] == 200
    recorded = rows(url, "SELECT connection_id, tenant_id::text FROM live_connections ORDER BY 1")
    assert ("conn-shop", tenant) in recorded
    assert "conn-nowhere" not in {row[0] for row in recorded}

"""Live updates end to end: real WebSocket clients against two real `edgemart serve`
processes sharing PostgreSQL and Redis, queued purchases through a real local SQS endpoint
applied by the gateway's own worker (docs/live-updates.md)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.live import (
    create_queue,
    live_environment,
    receive,
    receive_until,
    send,
    sqs_server,
    ws_url,
)
from tests.support.purchases import fund, new_product, product_for
from tests.support.serve import Serve, answering_serve
from tests.support.sql import sql
from tests.support.tokens import SECRET, auth, headers

pytestmark = [pytest.mark.live, pytest.mark.anyio]


@pytest.fixture(scope="module")
def fleet(
    catalog_database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Serve, Serve]]:
    """Two serves on one database and one Redis: `a` takes the writes in the cross-process
    tests, `b` holds the sockets."""
    temp = tmp_path_factory.mktemp("live")
    with sqs_server() as endpoint:
        env = live_environment(
            catalog_database_url, redis_url, endpoint, create_queue(endpoint), SECRET
        )
        with (
            answering_serve(env, temp / "a.log", temp) as a,
            answering_serve(env, temp / "b.log", temp) as b,
        ):
            yield a, b


def token(sub: str) -> str:
    return auth(sub)["Authorization"].removeprefix("Bearer ")


def listed_products(url: str, count: int) -> list[str]:
    rows = sql(
        url,
        "SELECT p.id::text FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active ORDER BY p.id LIMIT %s",
        count,
    )
    return [row[0] for row in rows]


async def buy(serve: Serve, sub: str, product: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=serve.url, timeout=10) as client:
        return await client.post(
            "/purchases", json={"product_id": product, "quantity": 1}, headers=headers(sub)
        )


async def test_a_purchase_through_one_process_reaches_sockets_on_both(
    fleet: tuple[Serve, Serve], catalog_database_url: str
) -> None:
    a, b = fleet
    product = product_for(catalog_database_url, "live-direct-buyer", stock=5, funds=100_000)
    channel = f"product:{product}"
    async with connect(ws_url(a)) as on_a, connect(ws_url(b)) as on_b:
        for client in (on_a, on_b):
            await send(client, action="subscribe", channel=channel)
            assert await receive(client) == {
                "type": "stock",
                "channel": channel,
                "data": {"product_id": product, "stock_available": 5, "in_stock": True},
            }
        assert (await buy(a, "live-direct-buyer", product)).status_code == 201
        for client in (on_a, on_b):  # on_b: committed through a, held by b
            message = await receive(client)
            assert (message["type"], message["channel"]) == ("stock", channel)
            assert message["data"]["stock_available"] == 4


async def test_queued_orders_push_completed_and_out_of_stock_failed(
    fleet: tuple[Serve, Serve], catalog_database_url: str
) -> None:
    a, b = fleet
    url = catalog_database_url
    product = new_product(url, stock=1)
    sql(url, "UPDATE products SET purchase_mode = 'queued' WHERE id = %s", product)
    buyers = ["live-queued-first", "live-queued-second"]
    for buyer in buyers:
        fund(url, buyer, 100_000)
    orders = []
    for buyer in buyers:  # in order: the first gets the one unit
        response = await buy(a, buyer, product)
        assert response.status_code == 202, response.text
        orders.append(response.json()["id"])
    async with connect(ws_url(b)) as first, connect(ws_url(b)) as second:
        for client, buyer, order in zip((first, second), buyers, orders, strict=True):
            await send(client, action="auth", token=token(buyer))
            await send(client, action="subscribe", channel=f"order:{order}")
            state = await receive(client)
            assert (state["type"], state["channel"]) == ("order", f"order:{order}")
            # The queue holds the message for a while: this is the state before the worker.
            assert state["data"]["status"] == "queued"
        completed = await receive_until(first, lambda m: m["type"] == "order", timeout_s=30)
        failed = await receive_until(second, lambda m: m["type"] == "order", timeout_s=30)
    assert completed["data"]["id"] == orders[0]
    assert completed["data"]["status"] == "completed"
    assert failed["data"]["id"] == orders[1]
    assert (failed["data"]["status"], failed["data"]["failure_code"]) == (
        "failed",
        "out_of_stock",
    )


async def test_order_channels_are_their_buyers_only(
    fleet: tuple[Serve, Serve], catalog_database_url: str
) -> None:
    a, _ = fleet
    product = product_for(catalog_database_url, "live-owner", stock=5, funds=100_000)
    order = (await buy(a, "live-owner", product)).json()["id"]
    channel = f"order:{order}"
    async with connect(ws_url(a)) as client:
        await send(client, action="subscribe", channel=channel)
        assert await receive(client) == {
            "type": "error",
            "code": "unauthorized",
            "channel": channel,
        }
        await send(client, action="auth", token="not-a-jwt")
        assert await receive(client) == {"type": "error", "code": "unauthorized"}
        await send(client, action="auth", token=token("live-someone-else"))
        await send(client, action="subscribe", channel=channel)
        refused = await receive(client)
        await send(client, action="subscribe", channel=f"order:{product}")  # no such order
        unknown = await receive(client)
        assert refused == {"type": "error", "code": "order_not_found", "channel": channel}
        assert unknown["code"] == "order_not_found"
        await send(client, action="auth", token=token("live-owner"))
        await send(client, action="subscribe", channel=channel)
        mine = await receive(client)
        assert (mine["type"], mine["data"]["id"], mine["data"]["status"]) == (
            "order",
            order,
            "completed",
        )


async def test_invalid_frames_are_answered_and_a_flood_is_closed_with_1008(
    fleet: tuple[Serve, Serve],
) -> None:
    a, _ = fleet
    unknown_product = "00000000-0000-4000-8000-000000000000"
    async with connect(ws_url(a)) as client:
        await send(client, action="subscribe", channel=f"product:{unknown_product}")
        assert await receive(client) == {
            "type": "error",
            "code": "product_not_found",
            "channel": f"product:{unknown_product}",
        }
        invalid = [
            "not json",
            "[1, 2]",
            json.dumps({"action": "dance"}),
            json.dumps({"action": "subscribe", "channel": "product:not-a-uuid"}),
            json.dumps({"action": "subscribe", "channel": "order:12345"}),
            json.dumps({"action": "subscribe", "channel": f"shop:{unknown_product}"}),
            json.dumps({"action": "ping", "pad": "x" * 5000}),  # over 4 KiB
            b'{"action": "ping"}',  # binary
        ]
        for frame in invalid:
            await client.send(frame)
            reply = await receive(client)
            assert (reply["type"], reply["code"]) == ("error", "invalid_message"), frame
        await send(client, action="ping")  # still open: the client is not flooding yet
        assert await receive(client) == {"type": "pong"}
        for _ in range(10):
            await client.send("{")
        with pytest.raises(ConnectionClosed):
            while True:
                await receive(client)
        assert client.close_code == 1008


async def test_the_51st_subscription_is_refused(
    fleet: tuple[Serve, Serve], catalog_database_url: str
) -> None:
    a, _ = fleet
    products = listed_products(catalog_database_url, 51)
    async with connect(ws_url(a)) as client:
        for product in products[:50]:
            await send(client, action="subscribe", channel=f"product:{product}")
            assert (await receive(client))["type"] == "stock"
        await send(client, action="subscribe", channel=f"product:{products[0]}")  # again: free
        assert (await receive(client))["type"] == "stock"
        await send(client, action="subscribe", channel=f"product:{products[50]}")
        assert await receive(client) == {
            "type": "error",
            "code": "too_many_subscriptions",
            "channel": f"product:{products[50]}",
        }
        await send(client, action="unsubscribe", channel=f"product:{products[0]}")
        await send(client, action="subscribe", channel=f"product:{products[50]}")
        assert (await receive(client))["type"] == "stock"


async def test_a_client_over_its_connection_limit_is_refused_429(
    fleet: tuple[Serve, Serve],
) -> None:
    a, _ = fleet
    held = [await connect(ws_url(a)) for _ in range(8)]  # WS_MAX_CONNECTIONS_PER_CLIENT
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(a))
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert json.loads(response.body)["code"] == "too_many_connections"
        await held.pop().close()
        async with connect(ws_url(a)) as again:
            await send(again, action="ping")
            assert await receive(again) == {"type": "pong"}
    finally:
        for client in held:
            await client.close()


async def test_a_client_that_does_not_read_is_closed_1013_and_slows_no_one(
    fleet: tuple[Serve, Serve], catalog_database_url: str
) -> None:
    a, _ = fleet
    product = product_for(catalog_database_url, "live-busy-buyer", stock=50, funds=100_000)
    host, port = a.url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    raw.connect((host, int(port)))
    async with (
        connect(ws_url(a), sock=raw, max_queue=1) as stalled,
        connect(ws_url(a)) as reader,
    ):
        await send(reader, action="subscribe", channel=f"product:{product}")
        await receive(reader)
        # Every ping asks for a pong the stalled client never reads: its queue fills.
        flood = asyncio.ensure_future(flood_with_pings(stalled))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        assert (await buy(a, "live-busy-buyer", product)).status_code == 201
        message = await receive(reader, timeout_s=5)  # while the flood goes on
        print(f"reader received the change {time.monotonic() - started:.3f} s after the buy")
        assert message["data"]["stock_available"] == 49, message
        assert await flood == 1013


async def flood_with_pings(client: ClientConnection, count: int = 60_000) -> int | None:
    """Send `count` pings without reading, then read everything the server sent until it
    closes: the code it closed with (its close frame waits behind the unread pongs)."""
    ping = json.dumps({"action": "ping"})
    try:
        for _ in range(count // 500):
            await asyncio.gather(*(client.send(ping) for _ in range(500)))
        while True:
            await receive(client, timeout_s=30)
    except ConnectionClosed:
        pass
    received = client.protocol.close_rcvd
    return received.code if received is not None else None


async def test_the_api_description_documents_the_upgrade(fleet: tuple[Serve, Serve]) -> None:
    a, _ = fleet
    async with httpx.AsyncClient(base_url=a.url) as client:
        described = (await client.get("/openapi.json")).json()["paths"]["/ws"]["get"]
    assert described["x-websocket"] is True
    assert "101" in described["responses"] and "429" in described["responses"]


def test_serve_logs_no_errors(fleet: tuple[Serve, Serve]) -> None:
    for serve in fleet:
        errors = [r for r in serve.records() if r.get("level") in ("ERROR", "CRITICAL")]
        assert errors == [], Path(serve.log).read_text()[-3000:]


async def test_an_idle_socket_is_closed_and_a_ping_keeps_it_open(
    catalog_database_url: str,
) -> None:
    from edgemart.services import Services
    from gateway.app import create_gateway
    from tests.conftest import serve_in_thread, settings_for

    settings = settings_for(catalog_database_url, ws_idle_timeout_s=1.0)
    with serve_in_thread(create_gateway(Services.from_settings(settings))) as url:
        ws = url.replace("http://", "ws://") + "/ws"
        async with connect(ws) as idle, connect(ws) as pinging:
            for _ in range(4):  # 2 s in all: past the timeout, but never 1 s without a ping
                await asyncio.sleep(0.5)
                await send(pinging, action="ping")
                assert await receive(pinging) == {"type": "pong"}
            with pytest.raises(ConnectionClosed):
                await receive(idle)
            assert idle.close_code == 1000

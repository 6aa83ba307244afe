"""The gateway hub's bookkeeping (edgemart.live.hub): subscriptions, limits, which changes
are due when (stock coalesced per product), and the bounded send queue."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from edgemart.changes import live_channel, order_status_changed, stock_pushed
from edgemart.db import Database
from edgemart.live.hub import LiveHub
from edgemart.live.protocol import MAX_SUBSCRIPTIONS, STOCK_COALESCE_S, Channel
from edgemart.live.state import PostgresState
from edgemart.settings import Settings
from edgemart.tenancy import DEFAULT_TENANT_ID
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio
PRODUCT = Channel("product", uuid.UUID("6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"))
ORDER = Channel("order", uuid.UUID("0d1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"))


def hub(clock: FakeClock, queue_bound: int = 4) -> LiveHub:
    # Nothing here reads the database: the state reader is never called.
    state = PostgresState(Database.primary_from(Settings(database_url="postgresql://unused")))
    return LiveHub(state, max_per_client=2, queue_bound=queue_bound, clock=clock)


class Sink:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: list[int] = []
        self.release = asyncio.Event()

    async def send(self, frame: str) -> None:
        await self.release.wait()
        self.sent.append(frame)

    async def close(self, code: int) -> None:
        self.closed.append(code)


async def test_stock_is_due_at_most_once_per_window_and_orders_at_once() -> None:
    clock = FakeClock(100.0)
    live = hub(clock)
    sink = Sink()
    socket = live.connect(DEFAULT_TENANT_ID, sink.send, sink.close)
    assert live.subscribe(socket, PRODUCT) and live.subscribe(socket, ORDER)
    product_key = live_channel(PRODUCT.name)
    order_key = live_channel(ORDER.name)

    live.changed(stock_pushed([str(PRODUCT.id)]).channels)
    assert live.take_due(clock.now) == [product_key]  # the first change: at once
    live.changed(stock_pushed([str(PRODUCT.id)]).channels)
    live.changed(stock_pushed([str(PRODUCT.id)]).channels)  # coalesced with the one before
    live.changed(order_status_changed([str(ORDER.id)]).channels)
    assert live.take_due(clock.now) == [order_key]
    clock.now += STOCK_COALESCE_S / 2
    assert live.take_due(clock.now) == []
    assert live.next_due() == pytest.approx(100.0 + STOCK_COALESCE_S)
    clock.now = 100.0 + STOCK_COALESCE_S
    assert live.take_due(clock.now) == [product_key]  # one read, the latest value
    assert live.take_due(clock.now + 10) == []


async def test_changes_nobody_here_subscribes_to_are_ignored() -> None:
    clock = FakeClock()
    live = hub(clock)
    other_tenant = uuid.uuid4()
    sink = Sink()
    socket = live.connect(other_tenant, sink.send, sink.close)
    live.subscribe(socket, PRODUCT)
    live.changed(stock_pushed([str(PRODUCT.id)]).channels)  # the default tenant's product
    assert live.take_due(clock.now) == []
    live.changed([live_channel(PRODUCT.name, other_tenant)])
    assert live.take_due(clock.now) == [live_channel(PRODUCT.name, other_tenant)]
    live.disconnect(socket)
    live.changed([live_channel(PRODUCT.name, other_tenant)])
    assert live.take_due(clock.now + 1) == [] and live.subscribers == {}


async def test_subscriptions_and_connections_are_limited() -> None:
    live = hub(FakeClock())
    assert [live.admit("198.51.100.1") for _ in range(3)] == [True, True, False]
    live.release("198.51.100.1")
    assert live.admit("198.51.100.1")
    sink = Sink()
    socket = live.connect(DEFAULT_TENANT_ID, sink.send, sink.close)
    channels = [Channel("product", uuid.uuid4()) for _ in range(MAX_SUBSCRIPTIONS + 1)]
    assert all(live.subscribe(socket, channel) for channel in channels[:MAX_SUBSCRIPTIONS])
    assert live.subscribe(socket, channels[0])  # already held: not counted twice
    assert not live.subscribe(socket, channels[-1])


async def test_a_full_queue_closes_its_socket_with_1013_and_spares_the_others() -> None:
    live = hub(FakeClock(), queue_bound=4)
    stalled, reading = Sink(), Sink()
    reading.release.set()
    slow = live.connect(DEFAULT_TENANT_ID, stalled.send, stalled.close)
    fast = live.connect(DEFAULT_TENANT_ID, reading.send, reading.close)
    for index in range(6):  # the stalled writer holds the first, four wait: the sixth overflows
        slow.push(f"frame {index}")
        fast.push(f"frame {index}")
        for _ in range(3):  # the reading client's writer runs between frames
            await asyncio.sleep(0)
    await slow.finished(1.0)
    await asyncio.sleep(0)
    assert stalled.closed == [1013] and slow.closed
    assert reading.sent == [f"frame {index}" for index in range(6)] and not fast.closed

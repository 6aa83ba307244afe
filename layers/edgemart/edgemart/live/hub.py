"""The gateway process's WebSockets: who subscribes to what, and the fan-out of committed
changes to them (docs/decisions/0044-live-updates.md).

Each process holds its own sockets. A committed write's `Changes.channels` reach `changed`
from this process's `Services.invalidate` and from every other process through the broadcast.
`changed` only notes which subscribed channels are due; `run` (one task per process) reads
the due channels' state in one query per tenant and kind, renders each frame once, and hands
it to every subscriber's queue. A product is due at most once per STOCK_COALESCE_S, carrying
the latest stock when it is read; an order is due at once.

A socket's queue is bounded: a client that does not read fills it and is closed with 1013,
and since handing a frame over never waits, it never delays the others. An idle socket holds
no task of its own beyond its receive loop (its writer runs only while it has frames to send).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import KW_ONLY, dataclass, field

from edgemart import metrics
from edgemart.background import in_background
from edgemart.changes import live_channel
from edgemart.live.protocol import (
    CLOSE_TRY_AGAIN_LATER,
    MAX_SUBSCRIPTIONS,
    STOCK_COALESCE_S,
    Channel,
    InvalidFrames,
)
from edgemart.live.state import PostgresState, channels_by_tenant
from edgemart.logging import ThrottledWarning

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]


class LiveSocket:
    """One WebSocket's session (a `SessionStore`) and its bounded send queue."""

    __slots__ = (
        "hub",
        "tenant_id",
        "_send",
        "_close",
        "_queue",
        "_writer",
        "_closing",
        "channels",
        "sub",
        "invalid",
        "closed",
    )

    def __init__(self, hub: LiveHub, tenant_id: uuid.UUID, send: SendText, close: Close) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self._send = send
        self._close = close
        self._queue: deque[str] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.channels: set[str] = set()
        """The keys (`live_channel`) this socket subscribes to."""
        self.sub: str | None = None
        self.invalid = InvalidFrames()
        self.closed = False

    # ---- SessionStore ----

    async def subject(self) -> str | None:
        return self.sub

    async def authenticated(self, sub: str) -> None:
        self.sub = sub

    async def subscribe(self, channel: Channel) -> bool:
        return self.hub.subscribe(self, channel)

    async def unsubscribe(self, channel: Channel) -> None:
        self.hub.unsubscribe(self, channel)

    # ---- Sending ----

    def push(self, frame: str) -> None:
        """Queue a frame without waiting; a full queue closes the socket with 1013."""
        if self.closed:
            return
        if len(self._queue) >= self.hub.queue_bound:
            metrics.record(metrics.LIVE_SLOW_CLIENTS_CLOSED)
            self._closing = self._start(self.close(CLOSE_TRY_AGAIN_LATER))
            return
        self._queue.append(frame)
        if self._writer is None:
            self._writer = self._start(self._write())

    def _start(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.hub.tasks.add(task)
        task.add_done_callback(self.hub.tasks.discard)
        return task

    async def _write(self) -> None:
        try:
            while self._queue and not self.closed:
                await self._send(self._queue[0])
                self._queue.popleft()
                metrics.record(metrics.LIVE_MESSAGES_SENT)
        except Exception:  # the client went away: its receive loop ends the session
            self.closed = True
        finally:
            self._writer = None

    async def finished(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a close begun by `push` to be written: the close frame
        waits behind what the slow client has not read yet, and the server drops the
        connection without one once the handler returns."""
        if self._closing is not None:
            with suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._closing)

    async def close(self, code: int) -> None:
        """Stop sending and close with `code` (the receive loop then ends)."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        with suppress(Exception):
            await self._close(code)


@dataclass(eq=False, repr=False)
class LiveHub:
    state: PostgresState
    _: KW_ONLY
    max_per_client: int
    queue_bound: int
    coalesce_s: float = STOCK_COALESCE_S
    clock: Callable[[], float] = time.monotonic
    subscribers: dict[str, set[LiveSocket]] = field(
        default_factory=lambda: defaultdict(set), init=False
    )
    tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _clients: Counter[str] = field(default_factory=Counter, init=False)
    _due: dict[str, float] = field(default_factory=dict, init=False)
    _last_read: dict[str, float] = field(default_factory=dict, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _failures: ThrottledWarning = field(
        default_factory=lambda: ThrottledWarning(
            "live updates: reading %s failed (%r)", every_s=60.0
        ),
        init=False,
    )

    # ---- Connections ----

    def admit(self, client: str) -> bool:
        """Count a new socket of `client`; False (not counted) when it holds the maximum."""
        if self._clients[client] >= self.max_per_client:
            return False
        self._clients[client] += 1
        return True

    def release(self, client: str) -> None:
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]

    def connect(self, tenant_id: uuid.UUID, send: SendText, close: Close) -> LiveSocket:
        return LiveSocket(self, tenant_id, send, close)

    def disconnect(self, socket: LiveSocket) -> None:
        socket.closed = True
        for key in list(socket.channels):
            self._leave(socket, key)

    # ---- Subscriptions ----

    def subscribe(self, socket: LiveSocket, channel: Channel) -> bool:
        key = live_channel(channel.name, socket.tenant_id)
        if key in socket.channels:
            return True
        if len(socket.channels) >= MAX_SUBSCRIPTIONS:
            return False
        socket.channels.add(key)
        self.subscribers[key].add(socket)
        return True

    def unsubscribe(self, socket: LiveSocket, channel: Channel) -> None:
        self._leave(socket, live_channel(channel.name, socket.tenant_id))

    def _leave(self, socket: LiveSocket, key: str) -> None:
        socket.channels.discard(key)
        sockets = self.subscribers.get(key)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.subscribers[key]
                self._last_read.pop(key, None)
                self._due.pop(key, None)

    # ---- Changes ----

    def changed(self, keys: Iterable[str]) -> None:
        """Committed changes (`Changes.channels`): note the subscribed ones as due. Never
        waits: called from a write's response path and from the broadcast's reader."""
        now = self.clock()
        for key in keys:
            if key not in self.subscribers or key in self._due:
                continue
            coalesced = "/product:" in key
            after = self._last_read.get(key, -self.coalesce_s) + self.coalesce_s
            self._due[key] = max(now, after) if coalesced else now
            self._wake.set()

    async def publish(self, keys: Iterable[str]) -> None:
        """`LiveOutlet`: this process's own committed changes."""
        self.changed(keys)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """`run` for the duration of the block (the gateway's lifespan); then every socket
        still open is closed."""
        try:
            async with in_background(self.run()):
                yield
        finally:
            for task_left in list(self.tasks):
                task_left.cancel()

    def take_due(self, now: float) -> list[str]:
        """The keys due at `now`, no longer pending; a product's next read is then
        `coalesce_s` away."""
        due = [key for key, at in self._due.items() if at <= now]
        for key in due:
            del self._due[key]
            self._last_read[key] = now
        return due

    def next_due(self) -> float | None:
        return min(self._due.values()) if self._due else None

    async def run(self) -> None:
        while True:
            due = self.take_due(self.clock())
            if due:
                await self.deliver(due)
                continue
            self._wake.clear()
            at = self.next_due()
            with suppress(TimeoutError):
                async with asyncio.timeout(None if at is None else max(0.0, at - self.clock())):
                    await self._wake.wait()

    async def deliver(self, keys: list[str]) -> None:
        """Read the keys' current state and fan each frame out to its subscribers."""
        for tenant_id, channels in channels_by_tenant(keys).items():
            try:
                frames = await self.state.changed(tenant_id, channels)
            except Exception as exc:  # best effort: the next change or a re-subscribe tells
                self._failures.note(f"{len(channels)} channels", exc)
                continue
            for name, frame in frames.items():
                for socket in list(self.subscribers.get(live_channel(name, tenant_id), ())):
                    socket.push(frame)

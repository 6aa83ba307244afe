"""A WebSocket client that does as little as a client can: the opening handshake, masked text
frames out, and the time each chunk of bytes arrives. It does not parse what arrives beyond a
check of the frame's kind. It measures when a message reaches a client's socket, apart from
what a full client library (the `websockets` package: framing, UTF-8 checks, a reader task per
connection) costs when a thousand clients share one Python process with the servers' two cores.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

STOCK = b'"type":"stock"'
PING = b"\x89"


def client_frame(payload: bytes, *, opcode: int = 0x81) -> bytes:
    """One masked frame, text unless `opcode` says otherwise (RFC 6455 §5.2: a client masks
    everything it sends)."""
    mask = os.urandom(4)
    length = len(payload)
    header = bytes([opcode, 0x80 | length]) if length < 126 else (
        bytes([opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    )  # fmt: skip
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.arrival: asyncio.Future[float] | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.upgraded.done():
            self._head += data
            if b"\r\n\r\n" in self._head:
                head, _, rest = self._head.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101"):
                    self.upgraded.set_exception(RuntimeError(head.decode(errors="replace")))
                    return
                self.upgraded.set_result(None)
                if rest:
                    self.data_received(rest)
            return
        while data[:1] == PING:  # the server's keep-alive: answered, not a message
            length = data[1] & 0x7F
            self._write(client_frame(data[2 : 2 + length], opcode=0x8A))
            data = data[2 + length :]
        if not data:
            return
        if self.arrival is not None and not self.arrival.done():
            if STOCK not in data:
                self.arrival.set_exception(RuntimeError(f"not a stock message: {data[:80]!r}"))
            else:
                self.arrival.set_result(now)

    def expect(self) -> asyncio.Future[float]:
        """The time the next message arrives."""
        self.arrival = asyncio.get_running_loop().create_future()
        return self.arrival

    def send(self, text: str) -> None:
        self._write(client_frame(text.encode()))

    def _write(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)


async def open_raw(host: str, port: int, subscribe: str) -> RawClient:
    """A raw client on `/ws`, subscribed to `subscribe`, its current state read."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(RawClient, host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert client.transport is not None
    client.transport.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(client.upgraded, 30)
    state = client.expect()
    client.send(f'{{"action": "subscribe", "channel": "{subscribe}"}}')
    await asyncio.wait_for(state, 30)
    return client

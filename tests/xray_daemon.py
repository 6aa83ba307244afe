"""A stand-in for the X-Ray daemon: a UDP socket on a loopback port that keeps the segment
documents sent to it, checking each datagram's protocol header as the daemon does."""

from __future__ import annotations

import json
import socket
from typing import Any

HEADER = b'{"format":"json","version":1}\n'


class XRayDaemonStub:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.setblocking(False)
        self.documents: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()
        return f"{host}:{port}"

    def receive(self) -> list[dict[str, Any]]:
        """Every document sent so far. Spans are sent as they end, and a datagram sent over
        loopback is in this socket's buffer when `sendto` returns: nothing to wait for."""
        while True:
            try:
                data = self._socket.recv(65_536)
            except BlockingIOError:
                return self.documents
            header, _, body = data.partition(b"\n")
            if header + b"\n" != HEADER:
                raise AssertionError(f"not an X-Ray datagram: {data[:80]!r}")
            self.documents.append(json.loads(body))

    def close(self) -> None:
        self._socket.close()

"""A local stand-in for the API Gateway Management API's answers moto never gives: a
connection that is gone (410 GoneException) and throttling (429 TooManyRequestsException).
boto3 talks to it over HTTP as to AWS (`endpoint_url`); the frames it accepts are kept."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class ManagementStub:
    url: str
    gone: set[str] = field(default_factory=set)
    throttle: dict[str, int] = field(default_factory=dict)
    """Connection id -> how many more posts to it are answered 429 first."""
    posted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    deleted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def management_stub(stage: str = "live") -> Iterator[ManagementStub]:
    holder: list[ManagementStub] = []

    class Handler(BaseHTTPRequestHandler):
        def _connection(self) -> str:
            return unquote(self.path.rsplit("/@connections/", 1)[1])

        def _error(self, status: int, error_type: str) -> None:
            body = json.dumps({"message": error_type}).encode()
            self.send_response(status)
            self.send_header("x-amzn-ErrorType", error_type)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _ok(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            stub = holder[0]
            connection = self._connection()
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with stub.lock:
                if connection in stub.gone:
                    return self._error(410, "GoneException")
                if stub.throttle.get(connection, 0) > 0:
                    stub.throttle[connection] -= 1
                    return self._error(429, "TooManyRequestsException")
                stub.posted[connection].append(data.decode())
            self._ok()

        def do_DELETE(self) -> None:  # noqa: N802
            stub = holder[0]
            with stub.lock:
                stub.deleted.append(self._connection())
            self._ok()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(ManagementStub(f"http://127.0.0.1:{server.server_port}/{stage}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()

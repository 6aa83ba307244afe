"""The real server `edgemart serve` runs (uvicorn with gateway.httpserver's settings): request
heads are bounded (431 problem+json), and forwarding headers are never believed by the server
itself, only by TRUSTED_PROXIES in the app."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from edgemart.services import Services
from gateway.app import create_gateway
from gateway.httpserver import MAX_HEADER_BYTES, MAX_HEADER_COUNT
from tests.conftest import serve_in_thread, settings_for


async def echo_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """What the server put in the scope: client address and scheme."""
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"][0], "scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve_in_thread(echo_scope) as url:
        yield url


def gateway_url(database_url: str, **overrides: Any) -> Iterator[str]:
    settings = settings_for(database_url, rate_limit_overrides=(("search", 3, 60),), **overrides)
    services = Services.from_settings(settings)
    with serve_in_thread(create_gateway(services)) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(catalog_database_url: str) -> Iterator[str]:
    yield from gateway_url(catalog_database_url)


def exchange(url: str, head: bytes, *, chunk: int = 65536) -> bytes:
    """Send a raw request head (in chunks, as a client streaming it would) and read one
    response; a server that hangs up mid-send ends the sending."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        try:
            for start in range(0, len(head), chunk):
                conn.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while not _complete(received) and (data := conn.recv(65536)):
                received += data
        except (ConnectionResetError, TimeoutError):
            pass
    return received


def _complete(response: bytes) -> bool:
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def request_head(headers: list[tuple[str, str]], path: str = "/health/live") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_431(response: bytes) -> None:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), response[:200]
    assert b"content-type: application/problem+json" in head
    assert b"connection: close" in head
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["code"] == "headers_too_large"


def filler(count: int, total_bytes: int) -> list[tuple[str, str]]:
    """`count` headers whose wire form (`name: value` + CRLF) adds up to `total_bytes`."""
    headers = [(f"x-fill-{index:03d}", "") for index in range(count)]
    used = sum(len(name) + 4 for name, _ in headers)
    name, _ = headers[-1]
    headers[-1] = (name, "v" * (total_bytes - used))
    return headers


def test_heads_within_the_limits_are_served(gateway: str) -> None:
    host_bytes = len("host") + len("t") + 4
    at_limit = filler(MAX_HEADER_COUNT - 1, MAX_HEADER_BYTES - host_bytes)
    response = exchange(gateway, request_head(at_limit))
    assert response.startswith(b"HTTP/1.1 200"), response[:200]


def test_one_header_too_many_is_431(gateway: str) -> None:
    assert_431(exchange(gateway, request_head(filler(MAX_HEADER_COUNT, 2000))))


def test_one_byte_too_many_is_431(gateway: str) -> None:
    host_bytes = len("host") + len("t") + 4
    assert_431(exchange(gateway, request_head(filler(10, MAX_HEADER_BYTES - host_bytes + 1))))


def test_thousands_of_headers_are_431(gateway: str) -> None:
    assert_431(exchange(gateway, request_head([("x", "y")] * 20_000)))


def test_a_30_mb_header_is_cut_off(gateway: str) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (30 * 1024 * 1024)
    assert_431(exchange(gateway, head + b"\r\n\r\n"))


def test_a_head_that_never_ends_is_cut_off(gateway: str) -> None:
    assert_431(exchange(gateway, b"GET /health/live HTTP/1.1\r\nX: " + b"a" * 40_000))


def test_keep_alive_requests_each_get_their_own_budget(gateway: str) -> None:
    with httpx.Client(base_url=gateway) as client:
        for _ in range(5):
            big = dict(filler(50, MAX_HEADER_BYTES // 2))
            assert client.get("/health/live", headers=big).status_code == 200


def test_the_server_ignores_forwarding_headers(echo_url: str) -> None:
    seen = httpx.get(
        echo_url,
        headers={"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"},
    ).json()
    assert seen == {"client": "127.0.0.1", "scheme": "http"}


def test_a_forged_forwarded_for_gets_no_fresh_quota(gateway: str) -> None:
    statuses = [
        httpx.get(
            f"{gateway}/marketplace/search",
            params={"q": "lamp"},
            headers={"X-Forwarded-For": f"198.51.100.{index}"},
        ).status_code
        for index in range(5)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]


def test_trusted_proxies_remain_the_authority(catalog_database_url: str) -> None:
    for url in gateway_url(catalog_database_url, trusted_proxies=(_loopback(),)):
        statuses = {
            httpx.get(
                f"{url}/marketplace/search",
                params={"q": uuid.uuid4().hex[:6]},
                headers={"X-Forwarded-For": f"198.51.100.{index}"},
            ).status_code
            for index in range(6)
        }
        assert statuses == {200}


def _loopback() -> Any:
    import ipaddress

    return ipaddress.ip_network("127.0.0.1/32")

"""The shared limit holds across processes, and survives Redis going away and coming back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from edgemart.appfactory import build_app
from edgemart.services import Services
from tests.conftest import LogCapture, RedisProcess, settings_for, unused_port
from tests.ratelimit_app import ROUTES

pytestmark = pytest.mark.anyio

LIMIT = 100


def start_gateway_process(redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = unused_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_SEARCH": f"{LIMIT}/60",
        # This test is about exactness across processes, not the fall-back: give Redis time
        # to answer under a 1,000-request burst on two cores.
        "RATE_LIMIT_TIMEOUT_MS": "3000",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.ratelimit_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def two_gateways(own_redis: RedisProcess) -> Iterator[list[str]]:
    started = [start_gateway_process(own_redis.url) for _ in range(2)]
    try:
        for _, url in started:
            wait_until_up(url)
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(timeout=30)


async def test_two_processes_admit_exactly_the_limit(two_gateways: list[str]) -> None:
    # httpx's pool slows down sharply with hundreds of waiters on one client, so the 1,000
    # concurrent requests go through 20 small clients.
    clients = [
        httpx.AsyncClient(limits=httpx.Limits(max_connections=5), timeout=60) for _ in range(20)
    ]
    try:
        responses = await asyncio.gather(
            *(clients[i % 20].get(f"{two_gateways[i % 2]}/marketplace/search") for i in range(1000))
        )
    finally:
        for client in clients:
            await client.aclose()
        # Let the transports' close callbacks run before the loop may be torn down.
        await asyncio.sleep(0.05)
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: LIMIT, 429: 1000 - LIMIT}
    assert sum(1 for r in responses[::2] if r.status_code == 200) > 0  # both processes admitted
    assert sum(1 for r in responses[1::2] if r.status_code == 200) > 0


async def test_redis_outage_mid_traffic(own_redis: RedisProcess, captured_logs: LogCapture) -> None:
    settings = settings_for(
        None,
        redis_url=own_redis.url,
        rate_limit_overrides=(("search", 1000, 60),),
        access_log_sample_rate=1.0,
        # A stopped Redis refuses connections at once; the generous timeout keeps a busy
        # event loop on a shared CI machine from being mistaken for an outage.
        rate_limit_timeout_ms=1000.0,
    )
    services = Services.from_settings(settings)
    services.rate_limiter.backoff.retry_after_s = 0.2  # type: ignore[attr-defined]
    app = build_app(ROUTES, services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1))

    async def phase(client: httpx.AsyncClient) -> tuple[set[int], Counter[str]]:
        already = len(captured_logs.lines("request"))
        responses = await asyncio.gather(*(client.get("/marketplace/search") for _ in range(50)))
        lines = captured_logs.lines("request")[already:]
        return {r.status_code for r in responses}, Counter(
            str(line["rate_limit"]) for line in lines
        )

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = await phase(client)
            own_redis.kill()
            during = await phase(client)
            own_redis.start()
            await asyncio.sleep(0.3)
            after = await phase(client)
    finally:
        await services.aclose()
    assert before == ({200}, Counter({"search:ok": 50}))
    assert during == ({200}, Counter({"search:ok:fallback": 50}))
    assert after == ({200}, Counter({"search:ok": 50}))

"""One round of purchases through the gateway app in process, for bench.capacity.purchase_profile.

    python bench/capacity/purchase_round.py URL SECRET SECONDS CONCURRENCY [PROFILE_PATH]

Run by path with PYTHONPATH naming the checkout to measure (this one, or an older commit's
worktree), so it imports nothing from `bench`: only what every edgemart commit has. The
gateway app is called directly (ASGI, no sockets), `CONCURRENCY` purchases in flight on one
event loop, each a new Idempotency-Key from one of 64 funded buyers over every product, for
`SECONDS`. Prints one JSON line: purchases/s, this process's CPU µs per purchase, statuses.
With `PROFILE_PATH`, the round runs under cProfile and its stats are written there.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import random
import sys
import time
import uuid
from typing import Any

import jwt
import psycopg

BUYERS = 64
DEFAULT_TENANT = "00000000-0000-0000-0000-000000000001"
RATE_LIMIT_GROUPS = ("home", "search", "store", "purchases")


def purchase_scope(token: str, body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"localhost"),
        (b"user-agent", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", b"Bearer " + token.encode()),
        (b"idempotency-key", uuid.uuid4().hex.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/purchases",
        "raw_path": b"/purchases",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }


async def call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def purchases(
    app: Any, tokens: list[str], products: list[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        rng = random.Random(index)
        while time.perf_counter() < deadline:
            body = json.dumps({"product_id": rng.choice(products), "quantity": 1}).encode()
            status = await call(app, purchase_scope(rng.choice(tokens), body), body)
            statuses[status] = statuses.get(status, 0) + 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(index) for index in range(concurrency)))
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    done = sum(statuses.values())
    return {"rate": done / elapsed, "cpu_us": cpu_s / done * 1e6, "statuses": statuses}


async def main(url: str, secret: str, seconds: float, concurrency: int, profile: str) -> None:
    from edgemart.services import Services
    from edgemart.settings import Settings
    from gateway.app import create_gateway

    with psycopg.connect(url) as conn:  # as the app role: row-level security wants the tenant
        conn.execute("SELECT set_config('edgemart.tenant_id', %s, false)", [DEFAULT_TENANT])
        products = [str(row[0]) for row in conn.execute("SELECT id FROM products")]
    settings = Settings(
        database_url=url,
        redis_url=os.environ.get("REDIS_URL"),
        jwt_secret=secret,
        rate_limit_overrides=tuple((group, 0, 60) for group in RATE_LIMIT_GROUPS),
        access_log_sample_rate=0.01,  # production's
    )
    services = Services.from_settings(settings)
    app = create_gateway(services)
    expires = int(time.time()) + 3600
    tokens = [jwt.encode({"sub": f"buyer-{n + 1}", "exp": expires}, secret) for n in range(BUYERS)]
    await purchases(app, tokens, products, min(2.0, seconds), concurrency)  # warm: pool, JIT
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    result = await purchases(app, tokens, products, seconds, concurrency)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await services.aclose()
    print(json.dumps(result))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0],
            arguments[1],
            float(arguments[2]),
            int(arguments[3]),
            arguments[4] if len(arguments) > 4 else "",
        )
    )

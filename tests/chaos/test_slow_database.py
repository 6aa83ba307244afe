"""Chaos: a hot row held locked (the database is "slow" for it). Requests fail fast at the
statement timeout with 503 instead of hanging, and everything recovers when it is released."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt
import psycopg
import pytest

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for
from tests.support.purchases import fund, new_product

pytestmark = [pytest.mark.anyio, pytest.mark.chaos]
SECRET = "slow-tests-secret-of-at-least-32-bytes!!"


async def test_a_locked_hot_row_fails_fast_then_recovers(catalog_database_url: str) -> None:
    url = catalog_database_url
    product = new_product(url, stock=50)
    for index in range(10):
        fund(url, f"slow-{index}", 10_000)
    services = Services.from_settings(
        settings_for(
            url,
            jwt_secret=SECRET,
            db_statement_timeout_ms=500,
            rate_limit_overrides=(("purchases", 0, 60),),
        )
    )

    def buy(client: httpx.AsyncClient, index: int) -> asyncio.Future[httpx.Response]:
        token = jwt.encode({"sub": f"slow-{index}", "exp": int(time.time()) + 600}, SECRET)
        return asyncio.ensure_future(
            client.post(
                "/purchases",
                json={"product_id": product, "quantity": 1},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            )
        )

    holder = await psycopg.AsyncConnection.connect(url)
    try:
        async with open_gateway(services, base_url="http://t") as client:
            await holder.execute("SELECT 1 FROM products WHERE id = %s FOR UPDATE", [product])
            started = time.monotonic()
            stuck = await asyncio.gather(*(buy(client, i) for i in range(4)))
            elapsed = time.monotonic() - started
            assert {r.status_code for r in stuck} == {503}
            assert {r.json()["code"] for r in stuck} == {"read_only_mode"}
            assert elapsed < 5, f"requests hung for {elapsed:.1f} s"
            await holder.rollback()  # the lock is released
            await asyncio.sleep(0.1)
            recovered = await asyncio.gather(*(buy(client, i) for i in range(4, 8)))
            assert {r.status_code for r in recovered} == {201}
    finally:
        await holder.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT stock FROM products WHERE id = %s", [product]).fetchone() == (
            46,
        )

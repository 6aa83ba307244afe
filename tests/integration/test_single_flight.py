"""100 concurrent requests for a cold key run the query once against the real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from edgemart.db import Connection, Database
from edgemart.readrouting import ReadRouting
from edgemart.services import Services
from tests.conftest import open_gateway, settings_for

pytestmark = pytest.mark.anyio


class CountingDatabase(Database):
    """The real pool, counting every connection checked out to run a query."""

    checkouts = 0

    @asynccontextmanager
    async def connection(self, *, timeout_s: float | None = None) -> AsyncIterator[Connection]:
        self.checkouts += 1
        async with super().connection(timeout_s=timeout_s) as conn:
            await asyncio.sleep(0.05)  # keep the load in flight while the others arrive
            yield conn


@pytest.mark.parametrize(
    ("path", "params"),
    [("/marketplace/home", {}), ("/marketplace/search", {"q": "chair", "sort": "price_asc"})],
)
async def test_concurrent_cold_misses_query_once(
    catalog_database_url: str, path: str, params: dict[str, str]
) -> None:
    settings = settings_for(
        catalog_database_url,
        cursor_secret="s",
        rate_limit_overrides=(("home", 0, 60), ("search", 0, 60)),
    )
    services = Services.from_settings(settings)
    counting = CountingDatabase(catalog_database_url)
    services.primary = services.replica = counting
    services.reads = ReadRouting(counting)
    async with open_gateway(services, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get(path, params=params) for _ in range(100)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert counting.checkouts == 1

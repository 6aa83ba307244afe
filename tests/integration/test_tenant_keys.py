"""Tenant-scoped keys through the gateway, with the fleet cache on a real Redis: two
tenants' pages at one path are two entries in this process's cache (L1) and in Redis (L2),
never one; a write in one tenant drops that tenant's pages in every process and in Redis and
leaves the other tenants' pages; the access log names each request's tenant.

Tenants are given to requests by host (`tests.support.tenants.TenantsByHost`), as the
resolution middleware does in a multi-tenant deployment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from starlette.types import ASGIApp

from edgemart.cache import TENANT_HEADER
from edgemart.changes import POPULAR_SEARCHES_KEY, SEARCH_KEY_PREFIX
from edgemart.services import Services
from edgemart.settings import Settings
from edgemart.tenancy import DEFAULT_TENANT, Tenant
from edgemart.tenantscope import scoped
from gateway.app import create_gateway
from tests.conftest import LogCapture
from tests.integration.test_fleet_cache import fleet_settings
from tests.integration.test_fleet_cache import process as fleet_process
from tests.support.polling import until
from tests.support.sql import sql
from tests.support.tenants import ACME, GLOBEX, TenantsByHost
from tests.support.tokens import auth

pytestmark = pytest.mark.anyio
HOSTS = {"a.example": ACME, "b.example": GLOBEX}
TENANTS = (DEFAULT_TENANT, ACME, GLOBEX)
HOST_OF = {ACME: "a.example", GLOBEX: "b.example", DEFAULT_TENANT: "localhost"}
ADMIN = auth("root", roles=["admin"])


@dataclass
class Process:
    client: httpx.AsyncClient
    services: Services

    async def get(self, tenant: Tenant, path: str) -> httpx.Response:
        response = await self.client.get(path, headers={"Host": HOST_OF[tenant]})
        assert response.status_code == 200, response.text
        return response

    def holds(self, tenant: Tenant, key: str) -> bool:
        """Whether this process's cache holds a fresh copy of the tenant's page `key`."""
        return self.services.cache.fresh(scoped(tenant, key)) is not None

    async def in_redis(self, tenant: Tenant, key: str) -> bool:
        shared = self.services.shared_cache
        assert shared is not None
        names = shared.names  # type: ignore[attr-defined]
        client = shared.redis.client()  # type: ignore[attr-defined]
        return bool(await client.exists(names.entry(scoped(tenant, key))))


@asynccontextmanager
async def process(settings: Settings) -> AsyncIterator[Process]:
    """One process of the fleet, listening to the others' writes, tenants by host."""

    def tenants_by_host(services: Services) -> ASGIApp:
        return TenantsByHost(create_gateway(services), HOSTS)

    async with fleet_process(settings, app_of=tenants_by_host) as one:
        yield Process(one.client, one.services)


@pytest.fixture
async def fleet(
    catalog_database_url: str, redis_url: str
) -> AsyncIterator[tuple[Process, Process]]:
    for tenant in (ACME, GLOBEX):  # the tenants exist, as the platform routes would make them
        sql(
            catalog_database_url,
            "INSERT INTO tenants (id, slug, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            tenant.id,
            tenant.slug,
            tenant.slug,
        )
    # A namespace of this test's own: the pages cached here are under test, nobody else's.
    settings = fleet_settings(
        catalog_database_url, redis_url, shared_cache_namespace=f"tenant-keys:{uuid.uuid4()}"
    )
    async with process(settings) as first, process(settings) as second:
        yield first, second


async def test_two_tenants_pages_at_one_path_never_share_an_entry(
    fleet: tuple[Process, Process], captured_logs: LogCapture
) -> None:
    first, second = fleet
    word = f"zq{uuid.uuid4().hex[:6]}"
    path = f"/marketplace/search?q={word}"
    key = f"{SEARCH_KEY_PREFIX}q={word}"
    for tenant in TENANTS:
        response = await first.get(tenant, path)
        expected = None if tenant is DEFAULT_TENANT else str(tenant.id)
        assert response.headers.get(TENANT_HEADER) == expected
    for tenant in TENANTS:
        await second.get(tenant, path)
        assert first.holds(tenant, key) and second.holds(tenant, key)
        assert await first.in_redis(tenant, key)
    lines = [
        line for line in captured_logs.lines("request") if line["route"] == "/marketplace/search"
    ]
    served = [(line["tenant"], line["cache"]) for line in lines]
    # The first process rendered each tenant's page (none was another's); the second found
    # each in Redis under its tenant's own key.
    assert served == [
        *((tenant.slug, "miss") for tenant in TENANTS),
        *((tenant.slug, "l2") for tenant in TENANTS),
    ]


async def test_a_write_in_one_tenant_drops_its_pages_everywhere_and_leaves_the_others(
    fleet: tuple[Process, Process],
) -> None:
    writer, reader = fleet
    path, key = "/marketplace/search/popular", POPULAR_SEARCHES_KEY
    for process_ in fleet:
        for tenant in TENANTS:
            await process_.get(tenant, path)
    for tenant in TENANTS:
        assert writer.holds(tenant, key) and reader.holds(tenant, key)
        assert await writer.in_redis(tenant, key)

    hidden = await writer.client.put(
        "/admin/popular-searches/hidden",
        json={"query": f"zq{uuid.uuid4().hex[:6]}", "hidden": True, "reason": "test"},
        headers={**ADMIN, "Host": HOST_OF[ACME]},
    )
    assert hidden.status_code == 200, hidden.text

    async def dropped_in_acme_only(process_: Process) -> bool:
        return not process_.holds(ACME, key) and all(
            process_.holds(tenant, key) for tenant in (DEFAULT_TENANT, GLOBEX)
        )

    assert await dropped_in_acme_only(writer)  # at once in the writer
    await until(lambda: dropped_in_acme_only(reader), limit_s=1.0)  # within a second elsewhere
    assert not await writer.in_redis(ACME, key)
    assert await writer.in_redis(GLOBEX, key) and await writer.in_redis(DEFAULT_TENANT, key)

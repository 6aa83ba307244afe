"""Which marketplace (tenant) a request, a job or a connection works for.

A tenant is one marketplace: its own catalog, wallets, orders, popular searches and home page
(docs/decisions/0040-tenancy.md). `TENANCY=single` serves the `default` tenant on every host;
`TENANCY=multi` resolves the tenant from the request's host. Either way the request carries a
`Tenant` (`tenant_of`), and every database transaction that touches tenant-scoped tables sets
it first (`in_tenant`): row-level security in the database hides every other tenant's rows,
and a transaction that sets none sees no tenant's rows at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from uuid import UUID

from starlette.types import Scope

if TYPE_CHECKING:
    from edgemart.db import Connection

DEFAULT_TENANT_ID: Final = UUID("00000000-0000-0000-0000-000000000001")
DEFAULT_TENANT_SLUG: Final = "default"
TENANT_STATE_KEY: Final = "tenant"
"""Where the request-context middleware leaves the resolved tenant in `scope["state"]`."""

TENANTLESS_PATHS: Final = ("/health", "/platform", "/metrics")
"""Paths (and everything under them) that belong to the deployment rather than to one
marketplace: the health checks a load balancer calls by address, platform administration and
the Prometheus scrape. In multi mode they answer on any host and resolve no tenant."""
_TENANTLESS_PREFIXES: Final = tuple(path + "/" for path in TENANTLESS_PATHS)


def is_tenant_scoped(path: str) -> bool:
    """Whether a request for `path` is for one marketplace: in multi mode, its host must
    name a tenant (404 `tenant_not_found` otherwise)."""
    return not (path in TENANTLESS_PATHS or path.startswith(_TENANTLESS_PREFIXES))


SET_TENANT_SQL: Final = "SELECT set_config('edgemart.tenant_id', %s, true)"
"""Transaction-local (`true`), so nothing outlives the transaction: safe behind a
transaction pooler, which hands the next transaction to another client."""


@dataclass(frozen=True, slots=True)
class Tenant:
    id: UUID
    slug: str
    platform_fee_bps: int | None = None
    """None: the deployment's `PLATFORM_FEE_BASIS_POINTS`."""

    def fee_basis_points(self, deployment_default: int) -> int:
        if self.platform_fee_bps is None:
            return deployment_default
        return self.platform_fee_bps


DEFAULT_TENANT: Final = Tenant(DEFAULT_TENANT_ID, DEFAULT_TENANT_SLUG)


def tenant_id_of(tenant: Tenant | UUID) -> UUID:
    """A tenant's id, given the tenant or its id."""
    return tenant.id if isinstance(tenant, Tenant) else tenant


def tenant_of(scope: Scope) -> Tenant:
    """The request's tenant: the one the middleware resolved, else `default` (single mode
    resolves none). Takes a scope, or a Starlette `Request` (a Mapping over its scope)."""
    state = scope.get("state")
    if state:
        tenant = state.get(TENANT_STATE_KEY)
        if tenant is not None:
            return tenant  # type: ignore[no-any-return]
    return DEFAULT_TENANT


@asynccontextmanager
async def in_tenant(conn: Connection, tenant: Tenant | UUID) -> AsyncIterator[Connection]:
    """A transaction on `conn` with the tenant set: everything run in the block sees that
    tenant's rows and no other's. Inside a transaction already open, sets it there."""
    tenant_id = str(tenant_id_of(tenant))
    async with conn.transaction():
        await conn.execute(SET_TENANT_SQL, (tenant_id,))
        yield conn

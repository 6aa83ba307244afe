"""Jobs run once per tenant (docs/decisions/0040-tenancy-in-the-database.md).

Row-level security shows a transaction only the rows of the tenant it set, and none when it
set none, so a scheduled job (refresh_views, maintenance, score_listings) works tenant by
tenant, each in a transaction of its own (`edgemart.tenancy.in_tenant`): a failure or a lock
in one tenant's work leaves the others' done. `tenants` is a platform table, readable without
a tenant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from edgemart.db import Connection

TENANT_IDS_SQL = b"SELECT id FROM tenants ORDER BY id"


async def tenant_ids(conn: Connection) -> list[UUID]:
    """Every tenant's id, in a stable order (so concurrent runs meet tenants alike)."""
    rows = await (await conn.execute(TENANT_IDS_SQL)).fetchall()
    return [row["id"] for row in rows]

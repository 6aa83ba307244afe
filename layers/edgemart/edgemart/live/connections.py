"""The AWS WebSocket API's connections and subscriptions in PostgreSQL (migration 0025;
docs/decisions/0045-websocket-subscriptions-store.md). Each message of a connection may reach
another Lambda environment, so its session lives here, not in memory.

Connections are the platform's directory (no tenant set: a message names only its connection);
subscriptions are their tenant's, read and written with it set (`in_tenant`).

Counting and inserting are serialised where a limit depends on both: the per-client limit by
a transaction-level advisory lock on the client's address, the per-connection subscription
limit by locking the connection's row.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from edgemart.db import Database
from edgemart.live.protocol import INVALID_LIMIT, INVALID_WINDOW_S, MAX_SUBSCRIPTIONS, Channel
from edgemart.tenancy import Tenant, in_tenant

CONNECT_SQL = b"""
INSERT INTO live_connections (connection_id, tenant_id, client_ip)
SELECT %(connection)s, %(tenant)s, %(client)s
WHERE (SELECT count(*) FROM live_connections WHERE client_ip = %(client)s) < %(limit)s
ON CONFLICT (connection_id) DO NOTHING
RETURNING connection_id
"""
NOTE_INVALID_SQL = b"""
UPDATE live_connections SET
    invalid_frames = CASE WHEN invalid_since > now() - %(window)s * interval '1 s'
                          THEN invalid_frames + 1 ELSE 1 END,
    invalid_since = CASE WHEN invalid_since > now() - %(window)s * interval '1 s'
                         THEN invalid_since ELSE now() END
WHERE connection_id = %(connection)s
RETURNING invalid_frames
"""
SESSION_SQL = b"""
SELECT c.tenant_id, t.slug, c.user_sub
FROM live_connections c JOIN tenants t ON t.id = c.tenant_id
WHERE c.connection_id = %s
"""
SUBSCRIBERS_SQL = b"""
SELECT channel, connection_id FROM live_subscriptions
WHERE tenant_id = %s AND channel = ANY(%s)
"""


async def connect(
    database: Database, connection_id: str, client_ip: str, limit: int, tenant_id: uuid.UUID
) -> bool:
    """Record a new connection; False when its client already holds `limit`."""
    async with database.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [client_ip])
        arguments = {
            "connection": connection_id,
            "tenant": tenant_id,
            "client": client_ip,
            "limit": limit,
        }
        row = await (await conn.execute(CONNECT_SQL, arguments)).fetchone()
    return row is not None


async def disconnect(database: Database, connection_ids: Iterable[str]) -> None:
    """Forget connections and (cascading) their subscriptions."""
    ids = list(connection_ids)
    if ids:
        async with database.connection() as conn:
            await conn.execute("DELETE FROM live_connections WHERE connection_id = ANY(%s)", [ids])


async def subscribers(
    database: Database, tenant_id: uuid.UUID, names: Iterable[str]
) -> dict[str, list[str]]:
    """The connection ids subscribed to each of the tenant's channels (by channel name)."""
    found: dict[str, list[str]] = defaultdict(list)
    async with database.connection() as conn, in_tenant(conn, tenant_id):
        rows = await (await conn.execute(SUBSCRIBERS_SQL, [tenant_id, list(names)])).fetchall()
    for row in rows:
        found[row["channel"]].append(row["connection_id"])
    return found


class PostgresSession:
    """A connection's session (a `SessionStore`), for the duration of one message."""

    def __init__(
        self, database: Database, connection_id: str, tenant: Tenant, sub: str | None
    ) -> None:
        self.database = database
        self.connection_id = connection_id
        self.tenant = tenant
        self._tenant_id = tenant.id
        self.sub = sub

    @classmethod
    async def load(cls, database: Database, connection_id: str) -> PostgresSession | None:
        async with database.connection() as conn:
            row = await (await conn.execute(SESSION_SQL, [connection_id])).fetchone()
        if row is None:
            return None
        tenant = Tenant(row["tenant_id"], row["slug"])
        return cls(database, connection_id, tenant, row["user_sub"])

    @property
    def tenant_id(self) -> uuid.UUID:
        return self._tenant_id

    async def subject(self) -> str | None:
        return self.sub

    async def authenticated(self, sub: str) -> None:
        async with self.database.connection() as conn:
            await conn.execute(
                "UPDATE live_connections SET user_sub = %s WHERE connection_id = %s",
                [sub, self.connection_id],
            )
        self.sub = sub

    async def subscribe(self, channel: Channel) -> bool:
        async with self.database.connection() as conn, in_tenant(conn, self._tenant_id):
            locked = await (
                await conn.execute(
                    "SELECT 1 FROM live_connections WHERE connection_id = %s FOR UPDATE",
                    [self.connection_id],
                )
            ).fetchone()
            if locked is None:
                return False
            row = await (
                await conn.execute(
                    "SELECT count(*) AS n, bool_or(channel = %s AND tenant_id = %s) AS has "
                    "FROM live_subscriptions WHERE connection_id = %s",
                    [channel.name, self._tenant_id, self.connection_id],
                )
            ).fetchone()
            assert row is not None
            if row["has"]:
                return True
            if row["n"] >= MAX_SUBSCRIPTIONS:
                return False
            await conn.execute(
                "INSERT INTO live_subscriptions (tenant_id, channel, connection_id) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [self._tenant_id, channel.name, self.connection_id],
            )
        return True

    async def unsubscribe(self, channel: Channel) -> None:
        async with self.database.connection() as conn, in_tenant(conn, self._tenant_id):
            await conn.execute(
                "DELETE FROM live_subscriptions "
                "WHERE tenant_id = %s AND channel = %s AND connection_id = %s",
                [self._tenant_id, channel.name, self.connection_id],
            )

    async def note_invalid(self) -> bool:
        """Count an invalid frame; True when the client has sent too many (close it)."""
        arguments = {"window": INVALID_WINDOW_S, "connection": self.connection_id}
        async with self.database.connection() as conn:
            row = await (await conn.execute(NOTE_INVALID_SQL, arguments)).fetchone()
        return row is not None and row["invalid_frames"] >= INVALID_LIMIT

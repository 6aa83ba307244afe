"""A live channel's current state, read from the primary (a replica may not hold the commit
that announced the change yet). Every read runs in its tenant (edgemart.tenancy.in_tenant),
so another tenant's ids are simply not found."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable

from edgemart.db import Database
from edgemart.live.protocol import Channel, order_frame, stock_frame
from edgemart.tenancy import in_tenant

BUYERS_ORDER_SQL = (
    b"SELECT order_json(o) AS document FROM orders o WHERE o.id = %s AND o.user_sub = %s"
)
ORDERS_SQL = (
    b"SELECT o.id::text AS id, order_json(o) AS document FROM orders o WHERE o.id = ANY(%s)"
)
# A product is subscribable while its page exists (GET /products/{id} answers it).
LISTED_STOCK_SQL = b"""
SELECT p.stock FROM products p JOIN stores s ON s.id = p.store_id
WHERE p.id = %s AND p.is_available AND p.is_approved AND s.is_active
"""
STOCKS_SQL = b"SELECT p.id::text AS id, p.stock FROM products p WHERE p.id = ANY(%s)"


class PostgresState:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def current(self, tenant_id: uuid.UUID, channel: Channel, sub: str | None) -> str | None:
        """The channel's state frame for a subscriber (`sub`: its authenticated buyer), or None
        when there is nothing it may see: an unknown id, another buyer's order, an unlisted
        product."""
        async with self.database.connection() as conn, in_tenant(conn, tenant_id):
            if channel.kind == "order":
                row = await (await conn.execute(BUYERS_ORDER_SQL, [channel.id, sub])).fetchone()
                return None if row is None else order_frame(channel.name, row["document"])
            row = await (await conn.execute(LISTED_STOCK_SQL, [channel.id])).fetchone()
            return None if row is None else stock_frame(channel.name, str(channel.id), row["stock"])

    async def changed(self, tenant_id: uuid.UUID, channels: Iterable[Channel]) -> dict[str, str]:
        """Each changed channel's frame, by channel name, in one round trip per kind; a channel
        whose row is gone has none."""
        ids: dict[str, list[uuid.UUID]] = {"order": [], "product": []}
        for channel in channels:
            ids[channel.kind].append(channel.id)
        frames: dict[str, str] = {}
        async with self.database.connection() as conn, in_tenant(conn, tenant_id):
            if ids["order"]:
                for row in await (await conn.execute(ORDERS_SQL, [ids["order"]])).fetchall():
                    name = f"order:{row['id']}"
                    frames[name] = order_frame(name, row["document"])
            if ids["product"]:
                for row in await (await conn.execute(STOCKS_SQL, [ids["product"]])).fetchall():
                    name = f"product:{row['id']}"
                    frames[name] = stock_frame(name, row["id"], row["stock"])
        return frames


def channels_by_tenant(keys: Iterable[str]) -> dict[uuid.UUID, list[Channel]]:
    """`Changes.channels` entries grouped by tenant (each tenant's state is read in its own
    transaction); entries this process cannot read are left out."""
    grouped: dict[uuid.UUID, list[Channel]] = defaultdict(list)
    for key in keys:
        parsed = split_key(key)
        if parsed is not None:
            grouped[parsed[0]].append(parsed[1])
    return grouped


def split_key(key: str) -> tuple[uuid.UUID, Channel] | None:
    """A `Changes.channels` entry (`<tenant>/<channel>`) as (tenant id, channel); None for one
    this process cannot read (a newer kind)."""
    from edgemart.live.protocol import InvalidMessageError, parse_channel

    tenant, _, name = key.partition("/")
    try:
        return uuid.UUID(tenant), parse_channel(name)
    except (ValueError, InvalidMessageError):
        return None

"""maintenance (scheduled daily): keep the idempotency-key partitions ahead of time and drop
the expired ones, and trim old search history.

A partition holds the keys claimed during one UTC day; its keys have all expired a key
lifetime (`IDEMPOTENCY_KEY_TTL_S`) after that day ends, and it is dropped once a further
retention period has passed (`IDEMPOTENCY_RETENTION_S`, default 24 h). Dropping a whole
partition is instant and leaves no dead rows to vacuum. Safe to run twice or concurrently:
creation skips existing partitions and drops are IF EXISTS.

Partitions are created and dropped by the table's owner's functions
(`create_idempotency_partitions()`, `drop_idempotency_partition()`, SECURITY DEFINER): the
application role that runs this job owns nothing. Search history is trimmed tenant by tenant,
each in its own transaction (docs/decisions/0040).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.services import Services
from edgemart.tenancy import in_tenant
from edgemart.tenantloop import tenant_ids

DAYS_AHEAD = 7
TRIM_HISTORY_SQL = b"DELETE FROM search_history WHERE created_at < now() - %s * interval '1 day'"
PARTITION_PREFIX = "idempotency_keys_"


def expired_partitions(
    names: list[str], now: datetime, key_ttl_s: int, retention_s: int
) -> list[str]:
    """Pure rule: the partitions whose newest possible key expired over `retention_s` ago."""
    expired = []
    for name in names:
        try:
            day = datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d").replace(
                tzinfo=UTC
            )
        except ValueError:
            continue
        day_end = day + timedelta(days=1)
        if day_end + timedelta(seconds=key_ttl_s + retention_s) <= now:
            expired.append(name)
    return sorted(expired)


async def maintenance(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    settings = services.settings
    async with services.primary.connection() as conn:
        clock = await (await conn.execute("SELECT now() AS now")).fetchone()
        now: datetime = clock["now"] if clock else datetime.now(UTC)  # the database's clock
        today: date = now.astimezone(UTC).date()
        created = [
            row["name"]
            for row in await (
                await conn.execute(
                    "SELECT create_idempotency_partitions(%s, %s) AS name",
                    [today, DAYS_AHEAD + 1],
                )
            ).fetchall()
        ]
        partitions = [
            row["name"]
            for row in await (
                await conn.execute(
                    "SELECT c.relname AS name FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'idempotency_keys'::regclass"
                )
            ).fetchall()
        ]
        dropped = expired_partitions(
            partitions, now, settings.idempotency_key_ttl_s, settings.idempotency_retention_s
        )
        for name in dropped:
            await conn.execute("SELECT drop_idempotency_partition(%s)", [name])
        trimmed = 0
        for tenant in await tenant_ids(conn):
            async with in_tenant(conn, tenant):
                cursor = await conn.execute(TRIM_HISTORY_SQL, [settings.search_history_days])
                trimmed += cursor.rowcount
    report = {
        "partitions_created": created,
        "partitions_dropped": dropped,
        "search_history_trimmed": trimmed,
    }
    logger.info("maintenance: %s", report)
    return report


runner = JobRunner(maintenance)
handler = runner.handler

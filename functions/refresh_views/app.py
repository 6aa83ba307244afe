"""refresh_views (scheduled every 5 minutes): refresh the home page's materialized views and
flush the buffered counters (search queries into `popular_searches`, product views, the
search history of signed-in users).

Everything runs in one transaction under `pg_try_advisory_xact_lock`, so overlapping runs
never stack: a run that finds the lock taken skips, logs it and succeeds. A transaction-level
lock (not a session one) stays correct behind a transaction pooler. REFRESH ... CONCURRENTLY
lets readers keep reading the old contents meanwhile. Drained search counts go back into the
buffer if the flush fails or the run skips, so none are lost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from edgemart.counters import (
    BufferedCounts,
    flush_search_counts,
    flush_search_history,
    flush_view_counts,
)
from edgemart.homepage import STORE_SNAPSHOT_SQL
from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.services import Services

REFRESH_LOCK_KEY = int.from_bytes(b"emrefrsh", "big") & 0x7FFF_FFFF_FFFF_FFFF
VIEWS = ("mv_category_counts", "mv_hot_products")
REFRESH_STATEMENT_TIMEOUT = "5min"


async def refresh_views(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    buffers = (services.search_counts, services.view_counts, services.search_history)
    drained = [await buffer.drain() for buffer in buffers]
    try:
        report = await _refresh(services, *drained)
    except BaseException:
        await _restore(buffers, drained)
        raise
    if report["status"] == "skipped":
        await _restore(buffers, drained)
    return report


async def _restore(buffers: tuple[BufferedCounts, ...], drained: list[dict[str, int]]) -> None:
    for buffer, counts in zip(buffers, drained, strict=True):
        await buffer.restore(counts)


async def _refresh(
    services: Services, counts: dict[str, int], views: dict[str, int], history: dict[str, int]
) -> dict[str, Any]:
    async with services.primary.connection() as conn, conn.transaction():
        row = await (
            await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", [REFRESH_LOCK_KEY])
        ).fetchone()
        if not row or not row["locked"]:
            logger.info("refresh_views: another run holds the lock; skipping")
            return {"status": "skipped", "reason": "another refresh is running"}
        await conn.execute(f"SET LOCAL statement_timeout = '{REFRESH_STATEMENT_TIMEOUT}'".encode())
        timings: dict[str, float] = {}
        for view in VIEWS:
            started = time.perf_counter()
            await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}".encode())
            timings[view] = round((time.perf_counter() - started) * 1000, 1)
        await conn.execute(STORE_SNAPSHOT_SQL)
        flushed = await flush_search_counts(
            conn, counts, services.settings.search_trending_period_s
        )
        viewed = await flush_view_counts(conn, views)
        remembered = await flush_search_history(conn, history)
    logger.info(
        "refresh_views: refreshed %s, flushed %d search queries and %d product view counts",
        timings,
        flushed,
        viewed,
    )
    return {
        "status": "refreshed",
        "views_ms": timings,
        "search_queries_flushed": flushed,
        "product_views_flushed": viewed,
        "search_history_flushed": remembered,
    }


runner = JobRunner(refresh_views)
handler = runner.handler

"""refresh_views (scheduled every 5 minutes): refresh the home page's materialized views and
store snapshot, and flush the buffered counters (search queries into `popular_searches`,
product views, the search history of signed-in users).

Four independent steps, each in its own transaction under its own transaction-scoped advisory
lock (`pg_try_advisory_xact_lock`, correct behind a transaction pooler): the views and the
snapshot; the search counts; the view counts; the search history. One failing step does not
roll back the others: it is logged, counted (`refresh_views_step_failures`) and named in the
report's `failed_steps`. A step whose lock another run holds skips, so overlapping runs never
stack. REFRESH ... CONCURRENTLY lets readers keep reading the old contents meanwhile.

Each flush step drains its buffer first and checks every entry in Python; entries that fail
the check, or that the database refuses, are dropped (logged, counted as
`counter_entries_dropped`). The checked entries go back into the buffer only when the step did
not write them for a reason that is not theirs: it skipped, the database was unavailable
(`edgemart.db.UNAVAILABLE_ERRORS`) or the run was cancelled. Any other failure drops them, so
no entry can fail every run forever.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from edgemart import metrics
from edgemart.counters import (
    BufferedCounts,
    Dropped,
    check_entries,
    flush_search_counts,
    flush_search_history,
    flush_view_counts,
    parse_history,
    parse_search_count,
    parse_view_count,
)
from edgemart.db import UNAVAILABLE_ERRORS, Connection
from edgemart.homepage import STORE_SNAPSHOT_SQL
from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.services import Services

T = TypeVar("T")
R = TypeVar("R")


def _lock_key(name: bytes) -> int:
    return int.from_bytes(name, "big") & 0x7FFF_FFFF_FFFF_FFFF


REFRESH_LOCK_KEY = _lock_key(b"emrefrsh")
LOCK_KEYS = {
    "views": REFRESH_LOCK_KEY,
    "search_counts": _lock_key(b"emflsrch"),
    "view_counts": _lock_key(b"emflview"),
    "search_history": _lock_key(b"emflhist"),
}
VIEWS = ("mv_category_counts", "mv_hot_products")
STATEMENT_TIMEOUT = "5min"


async def _locked(
    services: Services, step: str, body: Callable[[Connection], Awaitable[R]]
) -> R | None:
    """`body` in one transaction under the step's lock; None when another run holds it."""
    async with services.primary.connection() as conn, conn.transaction():
        row = await (
            await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", [LOCK_KEYS[step]])
        ).fetchone()
        if not row or not row["locked"]:
            logger.info("refresh_views: another run holds the %s lock; skipping it", step)
            return None
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'".encode())
        return await body(conn)


async def _refresh_views(conn: Connection) -> dict[str, float]:
    timings: dict[str, float] = {}
    for view in VIEWS:
        started = time.perf_counter()
        await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}".encode())
        timings[view] = round((time.perf_counter() - started) * 1000, 1)
    await conn.execute(STORE_SNAPSHOT_SQL)
    return timings


@dataclass(frozen=True, slots=True)
class FlushStep(Generic[T]):
    """One buffer: how its entries are checked and written."""

    name: str
    buffer: BufferedCounts
    parse: Callable[[str, int], T | str]
    flush: Callable[[Connection, list[T], Dropped], Awaitable[int]]


def _not_their_fault(exc: BaseException) -> bool:
    """The entries were not written for a reason that is not theirs: keep them."""
    return isinstance(exc, UNAVAILABLE_ERRORS) or not isinstance(exc, Exception)


async def _run_flush(services: Services, step: FlushStep[T]) -> tuple[int | None, int]:
    """(entries written, or None when skipped; entries dropped)."""
    drained = await step.buffer.drain()
    dropped = Dropped(step.name)
    checked = check_entries(drained, step.parse, dropped)
    entries = list(checked.values())

    async def keep() -> None:
        await step.buffer.restore(
            {name: drained[name] for name, entry in checked.items() if entry not in dropped}
        )

    try:
        written = await _locked(
            services, step.name, lambda conn: step.flush(conn, entries, dropped)
        )
    except BaseException as exc:
        if _not_their_fault(exc):
            await keep()
        else:
            for entry in entries:
                if entry not in dropped:
                    dropped(entry, "its flush failed")
        raise
    finally:
        if dropped.count > 0:
            logger.warning("refresh_views: dropped %d %s entries", dropped.count, step.name)
    if written is None:
        await keep()
    return written, dropped.count


def _flush_steps(services: Services) -> tuple[FlushStep[Any], ...]:
    period_s = services.settings.search_trending_period_s
    return (
        FlushStep(
            "search_counts",
            services.search_counts,
            parse_search_count,
            lambda conn, entries, dropped: flush_search_counts(conn, entries, period_s, dropped),
        ),
        FlushStep("view_counts", services.view_counts, parse_view_count, flush_view_counts),
        FlushStep(
            "search_history",
            services.search_history,
            parse_history,
            lambda conn, entries, dropped: flush_search_history(conn, entries, dropped),
        ),
    )


REPORT_KEYS = {
    "search_counts": "search_queries_flushed",
    "view_counts": "product_views_flushed",
    "search_history": "search_history_flushed",
}


def _failed(step: str) -> str:
    metrics.record(metrics.REFRESH_VIEWS_STEP_FAILURES, step=step)
    logger.exception("refresh_views: the %s step failed; the other steps go on", step)
    return "failed"


def _status(steps: dict[str, str]) -> str:
    outcomes = set(steps.values())
    if "failed" in outcomes:
        return "failed"
    if outcomes == {"skipped"}:
        return "skipped"
    return "partial" if "skipped" in outcomes else "refreshed"


async def refresh_views(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    steps: dict[str, str] = {}
    report: dict[str, Any] = {"views_ms": {}, "entries_dropped": {}}
    try:
        timings = await _locked(services, "views", _refresh_views)
        steps["views"] = "skipped" if timings is None else "done"
        report["views_ms"] = timings or {}
    except Exception:  # this step only; the flushes still run
        steps["views"] = _failed("views")
    for step in _flush_steps(services):
        report[REPORT_KEYS[step.name]] = 0
        try:
            written, dropped = await _run_flush(services, step)
        except Exception:  # this step only; its entries were kept or dropped above
            steps[step.name] = _failed(step.name)
            continue
        steps[step.name] = "skipped" if written is None else "done"
        report[REPORT_KEYS[step.name]] = written or 0
        report["entries_dropped"][step.name] = dropped
    report = {
        "status": _status(steps),
        "steps": steps,
        "failed_steps": [name for name, outcome in steps.items() if outcome == "failed"],
        **report,
    }
    logger.info("refresh_views: %s", report)
    return report


runner = JobRunner(refresh_views)
handler = runner.handler

"""refresh_views (scheduled every 5 minutes): rebuild the home page's lists and store its
snapshot, and flush the buffered counters (search queries into `popular_searches`, product
views, the search history of signed-in users), tenant by tenant (docs/decisions/0040).

Four independent steps; within each, every tenant's work is one transaction of its own, in
that tenant (`in_tenant`), under the step's transaction-scoped advisory lock
(`pg_try_advisory_xact_lock`, correct behind a transaction pooler): the home lists
(`refresh_home_lists()`, tables rebuilt per tenant where materialized views could only be
refreshed whole, by their owner) and the snapshot; the search counts; the view counts; the
search history. One failing step does not roll back the others: it is logged, counted
(`refresh_views_step_failures`) and named in the report's `failed_steps`. A tenant whose lock
another run holds is skipped by this run, so overlapping runs never stack; readers keep
reading the old rows until a tenant's transaction commits.

Each flush step drains its buffer first, checks every entry in Python and groups the entries
by the tenant they name; entries that fail the check, or that the database refuses, are
dropped (logged, counted as `counter_entries_dropped`). The checked entries go back into the
buffer only when the step did not write them for a reason that is not theirs: their tenant was
skipped, the database was unavailable (`edgemart.db.UNAVAILABLE_ERRORS`) or the run was
cancelled. Any other failure drops them, so no entry can fail every run forever. The search
counts step visits every tenant, entries or not: it also rotates each tenant's periods.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

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
from edgemart.tenancy import in_tenant
from edgemart.tenantloop import tenant_ids


class TenantEntry(Protocol):
    @property
    def tenant(self) -> UUID: ...


T = TypeVar("T", bound=TenantEntry)
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
STATEMENT_TIMEOUT = "5min"
REFRESH_HOME_SQL = b"SELECT refresh_home_lists(%s)"


async def _locked(
    services: Services, step: str, tenant: UUID, body: Callable[[Connection], Awaitable[R]]
) -> R | None:
    """`body` in one transaction in `tenant` under the step's lock; None when another run
    holds it."""
    async with services.primary.connection() as conn, in_tenant(conn, tenant):
        row = await (
            await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", [LOCK_KEYS[step]])
        ).fetchone()
        if not row or not row["locked"]:
            logger.info("refresh_views: another run holds the %s lock; skipping it", step)
            return None
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'".encode())
        return await body(conn)


async def _tenants(services: Services) -> list[UUID]:
    async with services.primary.connection() as conn:
        return await tenant_ids(conn)


def _home_of(tenant: UUID) -> Callable[[Connection], Awaitable[dict[str, float]]]:
    async def refresh(conn: Connection) -> dict[str, float]:
        started = time.perf_counter()
        await conn.execute(REFRESH_HOME_SQL, [tenant])
        lists_done = time.perf_counter()
        await conn.execute(STORE_SNAPSHOT_SQL)
        return {
            "home_lists": (lists_done - started) * 1000,
            "home_snapshot": (time.perf_counter() - lists_done) * 1000,
        }

    return refresh


async def _refresh_home(services: Services, tenants: list[UUID]) -> dict[str, float] | None:
    """Every tenant's home lists and snapshot; the time each part took, summed over the
    tenants; None when another run held every tenant's lock. A tenant that fails leaves the
    others done, and fails the step."""
    timings: dict[str, float] = defaultdict(float)
    refreshed = skipped = 0
    failure: Exception | None = None
    for tenant in tenants:
        try:
            took = await _locked(services, "views", tenant, _home_of(tenant))
        except Exception as exc:  # this tenant only; raised once the others are done
            logger.exception("refresh_views: the home lists of tenant %s failed", tenant)
            failure = exc
            continue
        if took is None:
            skipped += 1
            continue
        refreshed += 1
        for part, ms in took.items():
            timings[part] += ms
    if failure is not None:
        raise failure
    if skipped and not refreshed:
        return None
    return {part: round(ms, 1) for part, ms in timings.items()}


@dataclass(frozen=True, slots=True)
class FlushStep(Generic[T]):
    """One buffer: how its entries are checked and written."""

    name: str
    buffer: BufferedCounts
    parse: Callable[[str, int], T | str]
    flush: Callable[[Connection, list[T], Dropped], Awaitable[int]]
    every_tenant: bool = False
    """Visit every tenant, entries or not (the step also keeps up each tenant's state)."""


def _writer(
    step: FlushStep[T], batch: list[T], dropped: Dropped
) -> Callable[[Connection], Awaitable[int]]:
    """The body of one tenant's flush transaction."""
    return lambda conn: step.flush(conn, batch, dropped)


def _not_their_fault(exc: BaseException) -> bool:
    """The entries were not written for a reason that is not theirs: keep them."""
    return isinstance(exc, UNAVAILABLE_ERRORS) or not isinstance(exc, Exception)


async def _run_flush(
    services: Services, step: FlushStep[T], tenants: list[UUID]
) -> tuple[int | None, int]:
    """(entries written, or None when every tenant it had to visit was skipped; entries
    dropped)."""
    drained = await step.buffer.drain()
    dropped = Dropped(step.name)
    checked = check_entries(drained, step.parse, dropped)
    by_tenant: dict[UUID, dict[str, T]] = defaultdict(dict)
    for name, entry in checked.items():
        by_tenant[entry.tenant][name] = entry
    visits = list(tenants) if step.every_tenant else []
    visits += sorted(tenant for tenant in by_tenant if tenant not in visits)
    pending = dict(checked)  # not written yet

    async def keep(names: Mapping[str, T]) -> None:
        await step.buffer.restore(
            {name: drained[name] for name, entry in names.items() if entry not in dropped}
        )

    written_total, skipped = 0, 0
    try:
        for tenant in visits:
            entries = by_tenant.get(tenant, {})
            written = await _locked(
                services, step.name, tenant, _writer(step, list(entries.values()), dropped)
            )
            if written is None:
                skipped += 1
                await keep(entries)
            else:
                written_total += written
            for name in entries:
                pending.pop(name)
    except BaseException as exc:
        if _not_their_fault(exc):
            await keep(pending)
        else:
            for entry in pending.values():
                if entry not in dropped:
                    dropped(entry, "its flush failed")
        raise
    finally:
        if dropped.count > 0:
            logger.warning("refresh_views: dropped %d %s entries", dropped.count, step.name)
    if visits and skipped == len(visits):
        return None, dropped.count
    return written_total, dropped.count


def _flush_steps(services: Services) -> tuple[FlushStep[Any], ...]:
    period_s = services.settings.search_trending_period_s
    return (
        FlushStep(
            "search_counts",
            services.search_counts,
            parse_search_count,
            lambda conn, entries, dropped: flush_search_counts(conn, entries, period_s, dropped),
            every_tenant=True,
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
        tenants = await _tenants(services)
    except Exception:  # no step can run; nothing was drained
        for name in ("views", *REPORT_KEYS):
            steps[name] = _failed(name)
        tenants = []
    report["tenants"] = len(tenants)
    if not tenants:
        return _report(steps, report)
    try:
        timings = await _refresh_home(services, tenants)
        steps["views"] = "skipped" if timings is None else "done"
        report["views_ms"] = timings or {}
    except Exception:  # this step only; the flushes still run
        steps["views"] = _failed("views")
    for step in _flush_steps(services):
        report[REPORT_KEYS[step.name]] = 0
        try:
            written, dropped = await _run_flush(services, step, tenants)
        except Exception:  # this step only; its entries were kept or dropped above
            steps[step.name] = _failed(step.name)
            continue
        steps[step.name] = "skipped" if written is None else "done"
        report[REPORT_KEYS[step.name]] = written or 0
        report["entries_dropped"][step.name] = dropped
    return _report(steps, report)


def _report(steps: dict[str, str], details: dict[str, Any]) -> dict[str, Any]:
    report = {
        "status": _status(steps),
        "steps": steps,
        "failed_steps": [name for name, outcome in steps.items() if outcome == "failed"],
        **details,
    }
    logger.info("refresh_views: %s", report)
    return report


runner = JobRunner(refresh_views)
handler = runner.handler

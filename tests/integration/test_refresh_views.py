"""refresh_views: each step under its own lock and in its own transaction; overlapping runs
skip the steps another run holds; a failing step leaves the others committed; entries go back
into the buffer only when the database was unavailable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from edgemart import metrics
from edgemart.counters import (
    client_hash,
    history_entry,
    search_count_entry,
)
from edgemart.services import Services
from functions.refresh_views.app import LOCK_KEYS, REFRESH_LOCK_KEY, refresh_views
from tests.conftest import settings_for
from tests.contract.lambda_harness import FakeLambdaContext, job_handler

pytestmark = pytest.mark.anyio
EVENT = json.loads((Path(__file__).parents[1] / "events/eventbridge_scheduled.json").read_text())
A = client_hash(None, "198.51.100.1", None)
B = client_hash(None, "198.51.100.2", None)


async def test_refresh_picks_up_catalog_changes_and_flushes_counts(
    catalog_database_url: str,
) -> None:
    services = Services.from_settings(settings_for(catalog_database_url))
    try:
        with psycopg.connect(catalog_database_url) as conn:
            conn.execute(
                "UPDATE products SET sold_count = 99999999 WHERE id = "
                "(SELECT id FROM products WHERE is_available ORDER BY created_at LIMIT 1)"
            )
        for query, client in (("Office  Chair", A), ("office chair", A), ("lamp", A)):
            await services.search_counts.record(search_count_entry(query, client))
        await services.search_counts.record(search_count_entry("office chair", B))
        with psycopg.connect(catalog_database_url) as conn:
            viewed = conn.execute("SELECT id::text, view_count FROM products LIMIT 1").fetchone()
        assert viewed is not None
        for _ in range(3):
            await services.view_counts.record(viewed[0])
        report = await refresh_views(services, EVENT)
        assert report["status"] == "refreshed" and report["failed_steps"] == []
        assert set(report["steps"].values()) == {"done"}
        assert report["product_views_flushed"] == 1
        assert set(report["views_ms"]) == {"home_lists", "home_snapshot"}
        assert report["search_queries_flushed"] == 3  # (office chair, A), (office chair, B), ...
        with psycopg.connect(catalog_database_url) as conn:
            top = conn.execute("SELECT max(sold_count) FROM home_products").fetchone()
            counts = dict(
                conn.execute("SELECT query, total_count FROM popular_searches").fetchall()
            )
        assert top == (99999999,)
        with psycopg.connect(catalog_database_url) as conn:
            snapshot = conn.execute("SELECT document FROM home_snapshot WHERE id = 1").fetchone()
        assert snapshot is not None and snapshot[0]["hot"][0]["sold_count"] == 99999999
        with psycopg.connect(catalog_database_url) as conn:
            after = conn.execute(
                "SELECT view_count FROM products WHERE id = %s", [viewed[0]]
            ).fetchone()
        assert after == (viewed[1] + 3,)
        assert counts["office chair"] >= 2 and counts["lamp"] >= 1  # clients, not searches
        assert await services.search_counts.drain() == {}
    finally:
        await services.aclose()


async def test_an_overlapping_run_skips_the_step_in_progress(catalog_database_url: str) -> None:
    """Run A takes the views lock, then stalls behind a table lock the test holds; run B,
    started meanwhile, must skip the views and still flush its counts."""
    first = Services.from_settings(settings_for(catalog_database_url))
    second = Services.from_settings(settings_for(catalog_database_url))
    blocker = await psycopg.AsyncConnection.connect(catalog_database_url)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")  # stalls the refresh
        run_a = asyncio.create_task(refresh_views(first, EVENT))
        await _wait_for_advisory_lock(catalog_database_url)
        await second.search_counts.record(search_count_entry("overlap rug", A))
        report_b = await refresh_views(second, EVENT)
        assert report_b["status"] == "partial"
        assert report_b["steps"] == {
            "views": "skipped",
            "search_counts": "done",
            "view_counts": "done",
            "search_history": "done",
        }
        assert report_b["search_queries_flushed"] == 1
        await blocker.execute("COMMIT")
        report_a = await asyncio.wait_for(run_a, 30)
        assert report_a["status"] == "refreshed"
    finally:
        await blocker.close()
        await first.aclose()
        await second.aclose()
    assert _popular(catalog_database_url).get("overlap rug") == 1


@pytest.mark.parametrize("step", ["search_counts", "view_counts", "search_history"])
async def test_a_flush_whose_lock_is_held_skips_and_keeps_its_entries(
    catalog_database_url: str, step: str
) -> None:
    services = Services.from_settings(settings_for(catalog_database_url))
    entries = {
        "search_counts": search_count_entry("held lamp", A),
        "view_counts": _some_product(catalog_database_url),
        "search_history": history_entry("held-user", "held lamp"),
    }
    buffers = {
        "search_counts": services.search_counts,
        "view_counts": services.view_counts,
        "search_history": services.search_history,
    }
    holder = await psycopg.AsyncConnection.connect(catalog_database_url)
    try:
        for buffer_name, entry in entries.items():
            await buffers[buffer_name].record(entry)
        await holder.execute("BEGIN")
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEYS[step]])
        report = await refresh_views(services, EVENT)
        assert report["status"] == "partial"
        assert {name for name, done in report["steps"].items() if done == "skipped"} == {step}
        assert await buffers[step].drain() == {entries[step]: 1}  # kept for the next run
        for other in set(buffers) - {step}:
            assert await buffers[other].drain() == {}  # written
    finally:
        await holder.close()
        await services.aclose()


async def test_a_failing_step_rolls_back_only_itself(catalog_database_url: str) -> None:
    """The views step fails (its table is missing); the counts are written all the same."""
    services = Services.from_settings(settings_for(catalog_database_url))
    try:
        await services.search_counts.record(search_count_entry("lonely step", A))
        failed_before = metrics.count(metrics.REFRESH_VIEWS_STEP_FAILURES, step="views")
        with renamed(catalog_database_url, "TABLE", "home_products", "home_away"):
            report = await refresh_views(services, EVENT)
        assert report["status"] == "failed" and report["failed_steps"] == ["views"]
        assert report["steps"]["search_counts"] == "done"
        assert _popular(catalog_database_url).get("lonely step") == 1
        assert metrics.count(metrics.REFRESH_VIEWS_STEP_FAILURES, step="views") == failed_before + 1
    finally:
        await services.aclose()


async def test_entries_go_back_only_when_the_database_was_unavailable(
    catalog_database_url: str,
) -> None:
    """The search-count flush loses its connection (the test terminates it while it waits
    on a lock): its entries are kept for the next run. A flush that fails for any other
    reason drops its entries, counted, so they cannot fail every run."""
    services = Services.from_settings(settings_for(catalog_database_url))
    blocker = await psycopg.AsyncConnection.connect(catalog_database_url)
    entry = search_count_entry("cut off", A)
    try:
        await services.search_counts.record(entry)
        await blocker.execute("BEGIN")
        await blocker.execute("LOCK TABLE popular_searches IN ACCESS EXCLUSIVE MODE")
        run = asyncio.create_task(refresh_views(services, EVENT))
        await _terminate_backend_waiting_on(catalog_database_url, "popular_searches")
        await blocker.execute("COMMIT")
        report = await asyncio.wait_for(run, 30)
        assert report["failed_steps"] == ["search_counts"]
        assert report["steps"]["views"] == "done"
        assert await services.search_counts.drain() == {entry: 1}  # kept

        await services.search_counts.record(entry)
        dropped_before = metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="search_counts")
        with renamed(catalog_database_url, "TABLE", "popular_search_clients", "psc_away"):
            report = await refresh_views(services, EVENT)
        assert report["failed_steps"] == ["search_counts"]
        assert await services.search_counts.drain() == {}  # dropped, not re-queued
        assert (
            metrics.count(metrics.COUNTER_ENTRIES_DROPPED, buffer="search_counts")
            == dropped_before + 1
        )
    finally:
        await blocker.close()
        await services.aclose()


@contextmanager
def renamed(url: str, kind: str, name: str, away: str) -> Iterator[None]:
    """The `kind` (TABLE, MATERIALIZED VIEW) `name` renamed to `away` for the duration of the
    block, so that the step using it fails."""
    with psycopg.connect(url) as conn:
        conn.execute(f"ALTER {kind} {name} RENAME TO {away}".encode())
    try:
        yield
    finally:
        with psycopg.connect(url) as conn:
            conn.execute(f"ALTER {kind} {away} RENAME TO {name}".encode())


def _popular(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT query, total_count FROM popular_searches").fetchall())


def _some_product(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id::text FROM products ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


async def _terminate_backend_waiting_on(url: str, table: str) -> None:
    for _ in range(500):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                [f"%{table}%"],
            ).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no backend ever waited on {table}")


async def _wait_for_advisory_lock(url: str) -> None:
    key_low = REFRESH_LOCK_KEY & 0xFFFF_FFFF
    for _ in range(300):
        with psycopg.connect(url) as conn:
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                [key_low],
            ).fetchone()
        if held and held[0]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("run A never took the refresh lock")


def test_lambda_handler_with_a_scheduled_event(catalog_database_url: str) -> None:
    with job_handler(refresh_views, catalog_database_url) as handler:
        first = handler(EVENT, FakeLambdaContext())
        second = handler(EVENT, FakeLambdaContext())  # warm invocation: same loop, same pool
    assert first["status"] == second["status"] == "refreshed"


async def test_signed_in_search_history_is_kept_and_bounded(catalog_database_url: str) -> None:
    import time as clock

    import httpx
    import jwt

    from gateway.app import create_gateway

    secret = "history-tests-secret-of-at-least-32-bytes"
    services = Services.from_settings(
        settings_for(
            catalog_database_url,
            jwt_secret=secret,
            cursor_secret="s",
            rate_limit_overrides=(("search", 0, 60),),
        )
    )
    now = int(clock.time())
    auth = {"Authorization": "Bearer " + jwt.encode({"sub": "hist-user", "exp": now + 60}, secret)}
    transport = httpx.ASGITransport(app=create_gateway(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            signed_in = await client.get(
                "/marketplace/search", params={"q": "Oak  Lamp"}, headers=auth
            )
            anonymous = await client.get("/marketplace/search", params={"q": "rug"})
            bad = await client.get(
                "/marketplace/search", params={"q": "x"}, headers={"Authorization": "Bearer nope"}
            )
        assert (signed_in.status_code, anonymous.status_code, bad.status_code) == (200, 200, 401)
        report = await refresh_views(services, EVENT)
        assert report["search_history_flushed"] == 1
        with psycopg.connect(catalog_database_url) as conn:
            for index in range(60):
                conn.execute(
                    "INSERT INTO search_history (user_sub, query, created_at) "
                    "VALUES ('hist-user', %s, now() - interval '1 day' + %s * interval '1 s')",
                    [f"old {index}", index],
                )
        await services.search_history.record(history_entry("hist-user", "newest"))
        await refresh_views(services, EVENT)
        with psycopg.connect(catalog_database_url) as conn:
            rows = conn.execute(
                "SELECT query FROM search_history WHERE user_sub = 'hist-user' "
                "ORDER BY created_at DESC, id DESC"
            ).fetchall()
        queries = [row[0] for row in rows]
        assert len(queries) == 50
        assert queries[:2] == ["newest", "oak lamp"]
        assert "old 0" not in queries and "old 59" in queries
    finally:
        await services.aclose()

"""refresh_views: refreshes under a lock, skips when overlapping, flushes search counts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from edgemart.counters import normalise_query
from edgemart.services import Services
from functions.refresh_views.app import REFRESH_LOCK_KEY, refresh_views
from tests.conftest import settings_for
from tests.contract.lambda_harness import job_handler

pytestmark = pytest.mark.anyio
EVENT = json.loads((Path(__file__).parents[1] / "events/eventbridge_scheduled.json").read_text())


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
        for query in ("Office  Chair", "office chair", "lamp"):
            await services.search_counts.record(normalise_query(query))
        with psycopg.connect(catalog_database_url) as conn:
            viewed = conn.execute("SELECT id::text, view_count FROM products LIMIT 1").fetchone()
        assert viewed is not None
        for _ in range(3):
            await services.view_counts.record(viewed[0])
        report = await refresh_views(services, EVENT)
        assert report["status"] == "refreshed"
        assert report["product_views_flushed"] == 1
        assert set(report["views_ms"]) == {"mv_category_counts", "mv_hot_products"}
        assert report["search_queries_flushed"] == 2
        with psycopg.connect(catalog_database_url) as conn:
            top = conn.execute("SELECT max(sold_count) FROM mv_hot_products").fetchone()
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
        assert counts["office chair"] >= 2 and counts["lamp"] >= 1
        assert await services.search_counts.drain() == {}
    finally:
        await services.aclose()


async def test_an_overlapping_run_skips_and_keeps_its_counts(catalog_database_url: str) -> None:
    """Run A takes the refresh lock, then stalls behind a table lock the test holds; run B,
    started meanwhile, must skip."""
    first = Services.from_settings(settings_for(catalog_database_url))
    second = Services.from_settings(settings_for(catalog_database_url))
    blocker = await psycopg.AsyncConnection.connect(catalog_database_url)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")  # stalls the refresh
        run_a = asyncio.create_task(refresh_views(first, EVENT))
        await _wait_for_advisory_lock(catalog_database_url)
        await second.search_counts.record("rug")
        report_b = await refresh_views(second, EVENT)
        assert report_b["status"] == "skipped"
        assert await second.search_counts.drain() == {"rug": 1}  # restored, not lost
        await blocker.execute("COMMIT")
        report_a = await asyncio.wait_for(run_a, 30)
        assert report_a["status"] == "refreshed"
    finally:
        await blocker.close()
        await first.aclose()
        await second.aclose()


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
        first = handler(EVENT, None)
        second = handler(EVENT, None)  # warm invocation: same loop, same pool
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
        await services.search_history.record("hist-user\x1fnewest")
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

"""maintenance: creates the coming days' partitions, drops only expired ones, twice is safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from edgemart.services import Services
from functions.maintenance.app import expired_partitions, maintenance
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio
EVENT = json.loads((Path(__file__).parents[1] / "events/eventbridge_scheduled.json").read_text())


def partitions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'idempotency_keys'::regclass"
        ).fetchall()
    return {row[0] for row in rows}


def name(day: datetime) -> str:
    return f"idempotency_keys_{day:%Y%m%d}"


def test_expiry_rule() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    names = [name(now - timedelta(days=d)) for d in range(5)] + ["idempotency_keys_junk"]
    # A key lives 24 h, then 24 h of retention: the day that ended over 48 h ago goes.
    assert expired_partitions(names, now, 86_400, 86_400) == sorted(
        [name(now - timedelta(days=3)), name(now - timedelta(days=4))]
    )


async def test_creates_ahead_and_drops_only_expired(migrated_database_url: str) -> None:
    url = migrated_database_url
    today = datetime.now(UTC)
    old_day = today - timedelta(days=10)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT create_idempotency_partitions(%s, 1)", [old_day.date()])
        conn.execute("DROP TABLE " + name(today + timedelta(days=7)))  # a missing future day
    services = Services.from_settings(settings_for(url))
    try:
        first = await maintenance(services, EVENT)
        second = await maintenance(services, EVENT)
    finally:
        await services.aclose()
    present = partitions(url)
    assert name(old_day) not in present and first["partitions_dropped"] == [name(old_day)]
    for offset in range(-1, 8):
        assert name(today + timedelta(days=offset)) in present
    assert name(today + timedelta(days=7)) in first["partitions_created"]
    assert second["partitions_created"] == [] and second["partitions_dropped"] == []

"""Scheduled and queue functions invoked through their Lambda handlers with the events
`sam local generate-event` prints (cloudwatch scheduled-event, sqs receive-message)."""

from __future__ import annotations

import asyncio
import json

import psycopg

from edgemart.counters import client_hash, history_entry, search_count_entry
from edgemart.jobs import JobRunner
from edgemart.services import Services
from functions.order_worker.app import order_worker
from functions.refresh_views.app import refresh_views
from functions.score_listings.app import score_listings
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    job_handler,
    load_event,
    sqs_event_with_a_queued_order,
)


def test_score_listings_handler(catalog_database_url: str) -> None:
    with psycopg.connect(catalog_database_url) as conn:
        ((pending,),) = conn.execute(
            "SELECT count(*) FROM products WHERE quality_score IS NULL"
        ).fetchall()
    assert pending > 0  # the demo catalog has listings pending verification
    with job_handler(score_listings, catalog_database_url) as handler:
        report = handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
        again = handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
    assert (report["scorer"], report["scored"], report["failed"]) == ("model", pending, 0)
    assert again["claimed"] == 0  # nothing left pending


def test_order_worker_handler_reports_failed_records(catalog_database_url: str) -> None:
    """The SQS event from `sam local generate-event sqs receive-message`: its body is not a
    purchase message, so the record is reported back; a real one beside it is applied."""
    event, order_id = sqs_event_with_a_queued_order(catalog_database_url, "worker-buyer", 10000000)
    with job_handler(order_worker, catalog_database_url) as handler:
        response = handler(event, FakeLambdaContext())
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"}]
    }
    with psycopg.connect(catalog_database_url) as conn:
        status = conn.execute("SELECT status FROM orders WHERE id = %s", [order_id]).fetchone()
    assert status == ("completed",)


def test_refresh_views_handler_survives_poisoned_buffers(catalog_database_url: str) -> None:
    """The refresh_views handler, invoked with the scheduled event, after its buffers were
    poisoned: every step still runs, the good entries are written, the bad ones dropped for
    good (the next run has nothing left to drop)."""
    good_client = client_hash("poison-test-user", None, None)
    assert good_client is not None
    poison = {
        "search_counts": [
            search_count_entry("walnut desk", good_client),
            json.dumps(["nul\x00query", good_client]),
            json.dumps(["\ud800", good_client]),
            "not json at all",
            "old\x1fformat",
        ],
        "view_counts": ["not-a-uuid", "8A5F3E1C-2B4D-4C6E-9F80-1A2B3C4D5E6F"],
        "search_history": [history_entry("a\x1fb", "x"), json.dumps(["sub", "a\x00"])],
    }
    services = Services.from_settings(settings_for(catalog_database_url))
    for name, entries in poison.items():
        for entry in entries:  # in-process buffers: no loop of their own
            asyncio.run(getattr(services, name).record(entry))
    runner = JobRunner(refresh_views, services=services)
    try:
        report = runner.handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
        again = runner.handler(load_event("eventbridge_scheduled.json"), FakeLambdaContext())
    finally:
        runner.close()
    assert report["status"] == "refreshed" and report["failed_steps"] == []
    assert set(report["views_ms"]) == {"home_lists", "home_snapshot"}
    assert report["search_queries_flushed"] == 1
    assert report["entries_dropped"] == {"search_counts": 4, "view_counts": 2, "search_history": 2}
    assert again["status"] == "refreshed"
    assert again["entries_dropped"] == {"search_counts": 0, "view_counts": 0, "search_history": 0}
    with psycopg.connect(catalog_database_url) as conn:
        counted = conn.execute(
            "SELECT total_count FROM popular_searches WHERE query = 'walnut desk'"
        ).fetchone()
    assert counted == (1,)

"""Scheduled functions invoked through their Lambda handlers with the EventBridge scheduled
event that `sam local generate-event cloudwatch scheduled-event` prints."""

from __future__ import annotations

import psycopg

from edgemart.jobs import JobRunner
from edgemart.services import Services
from functions.refresh_views.app import refresh_views
from functions.score_listings.app import score_listings
from tests.conftest import settings_for
from tests.contract.lambda_harness import load_event


def test_refresh_views_handler(catalog_database_url: str) -> None:
    runner = JobRunner(
        refresh_views, services=Services.from_settings(settings_for(catalog_database_url))
    )
    try:
        report = runner.handler(load_event("eventbridge_scheduled.json"), None)
    finally:
        runner.close()
    assert report["status"] == "refreshed"


def test_score_listings_handler(catalog_database_url: str) -> None:
    with psycopg.connect(catalog_database_url) as conn:
        ((pending,),) = conn.execute(
            "SELECT count(*) FROM products WHERE quality_score IS NULL"
        ).fetchall()
    assert pending > 0  # the demo catalog has listings pending verification
    runner = JobRunner(
        score_listings, services=Services.from_settings(settings_for(catalog_database_url))
    )
    try:
        report = runner.handler(load_event("eventbridge_scheduled.json"), None)
        again = runner.handler(load_event("eventbridge_scheduled.json"), None)
    finally:
        runner.close()
    assert (report["scorer"], report["scored"], report["failed"]) == ("model", pending, 0)
    assert again["claimed"] == 0  # nothing left pending

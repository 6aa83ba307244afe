"""Scheduled and queue functions invoked through their Lambda handlers with the events
`sam local generate-event` prints (cloudwatch scheduled-event, sqs receive-message).
refresh_views' handler is exercised in tests/integration/test_refresh_views.py."""

from __future__ import annotations

import json

import psycopg

from functions.order_worker.app import order_worker
from functions.score_listings.app import score_listings
from tests.contract.lambda_harness import job_handler, load_event


def test_score_listings_handler(catalog_database_url: str) -> None:
    with psycopg.connect(catalog_database_url) as conn:
        ((pending,),) = conn.execute(
            "SELECT count(*) FROM products WHERE quality_score IS NULL"
        ).fetchall()
    assert pending > 0  # the demo catalog has listings pending verification
    with job_handler(score_listings, catalog_database_url) as handler:
        report = handler(load_event("eventbridge_scheduled.json"), None)
        again = handler(load_event("eventbridge_scheduled.json"), None)
    assert (report["scorer"], report["scored"], report["failed"]) == ("model", pending, 0)
    assert again["claimed"] == 0  # nothing left pending


def test_order_worker_handler_reports_failed_records(catalog_database_url: str) -> None:
    """The SQS event from `sam local generate-event sqs receive-message`: its body is not a
    purchase message, so the record is reported back; a real one beside it is applied."""
    event = load_event("sqs_receive_message.json")
    with psycopg.connect(catalog_database_url, autocommit=True) as conn:
        order_id, product_id = conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status, idempotency_key) SELECT 'worker-buyer', id, store_id, 1, "
            "price_cents, price_cents, 'queued', 'worker-key' FROM products "
            "WHERE stock > 0 AND is_available LIMIT 1 RETURNING id::text, product_id::text"
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) VALUES ('worker-buyer', 10000000)"
        )
    ours = {
        **event["Records"][0],
        "messageId": "ours",
        "body": json.dumps({"order_id": order_id, "product_id": product_id}),
    }
    event["Records"].append(ours)
    with job_handler(order_worker, catalog_database_url) as handler:
        response = handler(event, None)
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"}]
    }
    with psycopg.connect(catalog_database_url) as conn:
        status = conn.execute("SELECT status FROM orders WHERE id = %s", [order_id]).fetchone()
    assert status == ("completed",)

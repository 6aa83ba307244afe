"""The gateway's stand-in for Lambda's SQS event source mapping: when queued purchases are on
(`PURCHASE_QUEUE_URL`, with `SQS_ENDPOINT_URL` for a local endpoint), the scheduler polls the
queue, hands each batch to order_worker exactly as Lambda would (the SQS event shape), and
deletes the messages the worker did not report as failed; those come back after their
visibility timeout, as in AWS."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from edgemart.purchasequeue import SqsPurchaseQueue
from edgemart.services import Services

POLL_EVERY_S = 1.0
BATCH_SIZE = 10  # SQS's maximum per receive
MAX_BATCHES = 100


def lambda_sqs_event(messages: list[dict[str, Any]], queue_url: str) -> dict[str, Any]:
    """Pure: received SQS messages as the records of a Lambda SQS event."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_url,
                "awsRegion": "",
            }
            for message in messages
        ]
    }


async def poll_purchase_queue(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    """Receive and apply batches until the queue is empty (at most MAX_BATCHES per poll)."""
    queue = services.purchase_queue
    report = {"received": 0, "deleted": 0, "failed": 0}
    if not isinstance(queue, SqsPurchaseQueue):
        return report
    for _ in range(MAX_BATCHES):
        received, deleted, failed = await _one_batch(services, queue)
        report["received"] += received
        report["deleted"] += deleted
        report["failed"] += failed
        if received < BATCH_SIZE:
            break
    return report


async def _one_batch(services: Services, queue: SqsPurchaseQueue) -> tuple[int, int, int]:
    from functions.order_worker.app import order_worker

    client = queue.client()
    received = await asyncio.to_thread(
        client.receive_message, QueueUrl=queue.queue_url, MaxNumberOfMessages=BATCH_SIZE
    )
    messages: list[dict[str, Any]] = received.get("Messages", [])
    if not messages:
        return 0, 0, 0
    response = await order_worker(services, lambda_sqs_event(messages, queue.queue_url))
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    done = [m for m in messages if m["MessageId"] not in failed]
    if done:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
        await asyncio.to_thread(
            client.delete_message_batch, QueueUrl=queue.queue_url, Entries=entries
        )
    return len(messages), len(done), len(failed)

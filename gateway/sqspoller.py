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
BATCH_SIZE = 50  # as the template's event source mapping
RECEIVE_MAX = 10  # SQS's maximum per receive and per batch delete
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
        messages = await receive_batch(queue)
        if not messages:
            break
        _, failed = await apply_batch(services, queue, messages)
        report["received"] += len(messages)
        report["deleted"] += len(messages) - len(failed)
        report["failed"] += len(failed)
        if len(messages) < BATCH_SIZE:
            break
    return report


async def receive_batch(
    queue: SqsPurchaseQueue, batch_size: int = BATCH_SIZE
) -> list[dict[str, Any]]:
    """Up to `batch_size` messages, gathered over as many receives as that takes (as the
    event source mapping batches them); fewer when the queue runs dry."""
    messages: list[dict[str, Any]] = []
    while len(messages) < batch_size:
        received = await asyncio.to_thread(
            queue.client().receive_message,
            QueueUrl=queue.queue_url,
            MaxNumberOfMessages=min(RECEIVE_MAX, batch_size - len(messages)),
        )
        if not received.get("Messages"):
            break
        messages.extend(received["Messages"])
    return messages


async def apply_batch(
    services: Services, queue: SqsPurchaseQueue, messages: list[dict[str, Any]]
) -> tuple[dict[str, Any], set[str]]:
    """Run order_worker on the batch and delete the messages it did not report failed; the
    event it ran on and the failed message ids."""
    from functions.order_worker.app import order_worker

    event = lambda_sqs_event(messages, queue.queue_url)
    response = await order_worker(services, event)
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    done = [m for m in messages if m["MessageId"] not in failed]
    for start in range(0, len(done), RECEIVE_MAX):
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(done[start : start + RECEIVE_MAX])
        ]
        await asyncio.to_thread(
            queue.client().delete_message_batch, QueueUrl=queue.queue_url, Entries=entries
        )
    return event, failed

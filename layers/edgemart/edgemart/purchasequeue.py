"""The queue of purchases for hot items (products in queued mode): one SQS message per order,
`{"order_id", "product_id", "tenant_id"}`, read by functions/order_worker. A message sent
before tenancy has no `tenant_id`: its order is the `default` tenant's.

The purchase function sends the message before its transaction commits, so an order is never
left queued without a message; the worker retries a message whose order it cannot see yet (the
commit is a moment later) and a message whose transaction rolled back ends, after the queue's
receive limit, in the dead-letter queue with no order behind it.

boto3 is imported when the first message is sent, so only a purchase function configured with
`PURCHASE_QUEUE_URL` pays for it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from edgemart.tenancy import DEFAULT_TENANT_ID

if TYPE_CHECKING:
    from edgemart.tracing.tracer import Tracing


class PurchaseMessage(NamedTuple):
    tenant_id: str
    order_id: str
    product_id: str


class PurchaseQueue(Protocol):
    async def send(self, order_id: str, product_id: str, tenant_id: str) -> None: ...


class SqsPurchaseQueue:
    def __init__(
        self, queue_url: str, *, endpoint_url: str | None = None, tracing: Tracing | None = None
    ) -> None:
        self.queue_url = queue_url
        self.endpoint_url = endpoint_url
        self.tracing = tracing
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import boto3

            client = boto3.client("sqs", endpoint_url=self.endpoint_url)
            if self.tracing is not None:
                self.tracing.trace_aws_client(client)
            self._client = client
        return self._client

    async def send(self, order_id: str, product_id: str, tenant_id: str) -> None:
        body = json.dumps({"order_id": order_id, "product_id": product_id, "tenant_id": tenant_id})
        # boto3 is synchronous: the send runs in a thread so the event loop keeps serving.
        await asyncio.to_thread(
            self.client().send_message, QueueUrl=self.queue_url, MessageBody=body
        )


def purchase_message(body: str) -> PurchaseMessage:
    """The tenant, order and product ids, canonical UUIDs, of a message body (no tenant:
    `default`); ValueError if it is not one of ours."""
    try:
        data = json.loads(body)
        tenant = data.get("tenant_id", str(DEFAULT_TENANT_ID))
        return PurchaseMessage(
            str(uuid.UUID(tenant)),
            str(uuid.UUID(data["order_id"])),
            str(uuid.UUID(data["product_id"])),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a purchase message: {body[:100]!r}") from exc

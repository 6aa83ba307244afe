"""order_worker (SQS trigger): applies queued purchases of hot items in batches.

A batch's messages are grouped by tenant and product (a message names its tenant; one sent
before tenancy is `default`'s) and each group is applied in ONE transaction by
`apply_queued_orders()` (edgemart/sql/apply_queued_orders.sql), in its tenant, with the fee
the direct path charges there (the tenant's, else the deployment's):
the group's orders are filled first come first served up to the stock (and each buyer's
balance), the rest fail `out_of_stock` / `insufficient_funds`. A redelivered message finds its
order already applied and changes nothing. Failures are reported per message through
Powertools batch processing (`ReportBatchItemFailures`): a group whose transaction fails, a
message whose order is not visible yet (its purchase is still committing) and a message that
is not ours are returned to the queue; everything else is deleted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from edgemart import metrics
from edgemart.changes import Changes, order_status_changed, stock_changed, stock_pushed
from edgemart.jobs import JobRunner
from edgemart.logging import logger
from edgemart.purchasequeue import purchase_message
from edgemart.services import Services

APPLY_SQL = b"""
SELECT order_id::text AS order_id, status, failure_code
FROM apply_queued_orders(
    %(tenant)s::uuid, %(product)s::uuid, %(orders)s::uuid[],
    coalesce((SELECT t.platform_fee_bps FROM tenants t WHERE t.id = %(tenant)s::uuid), %(fee)s)
)
"""

Group = tuple[str, str]
"""(tenant id, product id): the orders one transaction applies."""


def uuid_array(ids: list[str]) -> str:
    """A uuid[] literal of canonical UUIDs (purchase_message checked them): sent as one text
    value, it costs half what adapting a list of 50 strings does."""
    return "{" + ",".join(ids) + "}"


class MessageFailedError(Exception):
    """This message goes back to the queue (retried, then dead-lettered)."""


def group_by_product(
    records: list[Mapping[str, Any]],
) -> tuple[dict[Group, list[str]], dict[str, tuple[Group, str] | None]]:
    """Pure: order ids per (tenant, product), and each message's ((tenant, product), order id)
    (None: not a purchase message). A message naming an order under the wrong product or
    tenant then fails alone, not the message that names it rightly."""
    groups: dict[Group, list[str]] = defaultdict(list)
    order_of: dict[str, tuple[Group, str] | None] = {}
    for record in records:
        body = record.get("body")
        try:
            if not isinstance(body, str):  # not a body SQS sends: never one of ours
                raise ValueError("not a text body")
            message = purchase_message(body)
        except ValueError:
            order_of[record["messageId"]] = None
            continue
        group = (message.tenant_id, message.product_id)
        order_of[record["messageId"]] = (group, message.order_id)
        groups[group].append(message.order_id)
    return groups, order_of


async def apply_groups(
    services: Services, groups: dict[Group, list[str]]
) -> dict[tuple[Group, str], str]:
    """Each ((tenant id, product id), order id)'s outcome: `completed`, its failure code when
    it failed (`out_of_stock`, `insufficient_funds`), or `retry` when its group's transaction
    failed or its order was not found under that product and tenant."""
    outcomes: dict[tuple[Group, str], str] = {}
    fee = services.settings.platform_fee_basis_points
    for group, order_ids in groups.items():
        tenant_id, product_id = group
        args = {"tenant": tenant_id, "product": product_id, "orders": uuid_array(order_ids)}
        try:
            async with services.primary.connection() as conn:
                rows = await (await conn.execute(APPLY_SQL, {**args, "fee": fee})).fetchall()
        except Exception:  # the whole group goes back to the queue; logged with its cause
            logger.exception(
                "order_worker: applying %d orders of %s failed", len(order_ids), product_id
            )
            outcomes.update(dict.fromkeys([(group, o) for o in order_ids], "retry"))
            continue
        applied = {row["order_id"]: row["failure_code"] or row["status"] for row in rows}
        for order_id in order_ids:
            outcomes[group, order_id] = applied.get(order_id, "retry")
        stock = Changes()
        if "completed" in applied.values():  # committed: the stock moved
            stock = stock_changed([product_id], tenant=UUID(tenant_id)) | stock_pushed(
                [product_id], tenant=UUID(tenant_id)
            )
        # And live subscribers of the orders learn their final status.
        final = [order_id for order_id, outcome in applied.items() if outcome != "queued"]
        await services.invalidate(stock | order_status_changed(final, tenant=UUID(tenant_id)))
    return outcomes


async def order_worker(services: Services, event: Mapping[str, Any]) -> dict[str, Any]:
    records = list(event.get("Records", ()))
    groups, order_of = group_by_product(records)
    outcomes = await apply_groups(services, groups)
    counts = Counter(outcomes.values())
    for outcome, value in counts.items():
        metrics.record(metrics.QUEUED_ORDERS, value, outcome=outcome)
    malformed = sum(key is None for key in order_of.values())
    if malformed:
        logger.error("order_worker: %d messages are not purchase messages", malformed)

    def handle(record: SQSRecord) -> None:
        key = order_of.get(record.message_id)
        if key is None:
            raise MessageFailedError(f"not a purchase message: {record.message_id}")
        if outcomes.get(key) == "retry":
            raise MessageFailedError(f"order {key[1]} not applied yet")

    # Every failure is reported per message, a wholly failed batch included (rather than
    # raising, which would also return every message but hide which ones failed and why).
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=dict(event), record_handler=handle, processor=processor, context=None
    )
    logger.info(
        "order_worker: %s", dict(counts, failed_messages=len(response["batchItemFailures"]))
    )
    return dict(response)


runner = JobRunner(order_worker)
handler = runner.handler

"""Purchase function: `POST /purchases`, `GET /purchases`, `GET /purchases/{id}`, `GET /wallet`.

A purchase is one call of the `purchase()` SQL function (edgemart/sql/purchase.sql): one
round trip, one transaction holding the key claim, the wallet debit, the order, the payout, the
audit row and, last so the hot row lock is held for as little as possible, the conditional
stock update. Idempotency keys belong to their user: the same key
from another user is another purchase. Business outcomes (201, 402, 404, 409) are stored under
the user's Idempotency-Key and replayed (edgemart/idempotency.py: the original body, with
`Idempotent-Replayed: true` and `Original-Request-ID`); a 503 or 500 stores nothing, so a
retry can succeed. A 402 or 409 refusal, a 503 and a 500 write `failed_transactions`. A
transient database error (a lost connection, a deadlock) is retried with the same key. The
marketplace's one currency is passed in: a product listed in another is not for sale.

Products in queued mode (hot items), when `PURCHASE_QUEUE_URL` is set: the same call stores
the order as `queued` and answers 202; the order's SQS message is sent inside the transaction,
before the commit, and functions/order_worker applies it (`apply_queued_orders()`). 201 and 202
carry `Location: /purchases/{id}`.

`GET /purchases` pages the caller's orders newest first, keyset on (created_at, id), with an
HMAC-signed cursor bound to the caller (edgemart/cursor.py).

Everything happens in the request's tenant (docs/decisions/0040): `purchase()` takes it first
and sets it, every other statement runs in `in_tenant`, the fee is the tenant's (else the
deployment's), and the queued order's message names it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart import metrics
from edgemart.appfactory import build_app, lambda_handler
from edgemart.breaker import CircuitOpenError
from edgemart.cache import NO_STORE
from edgemart.changes import stock_changed, stock_pushed
from edgemart.cursor import cursor_key, decode_cursor, next_page, query_fingerprint
from edgemart.db import UNAVAILABLE_ERRORS
from edgemart.errors import ProblemError, problem_response
from edgemart.idempotency import (
    REUSED_DETAIL,
    REUSED_TITLE,
    KeyInUseError,
    fingerprint,
    replay_headers,
)
from edgemart.logging import logger
from edgemart.requestid import current_request_id
from edgemart.requestinputs import inputs_of
from edgemart.routetable import IDEMPOTENCY_KEY
from edgemart.routing import by_name, starlette_routes
from edgemart.services import Services, services_of
from edgemart.tenancy import Tenant, in_tenant, tenant_of
from edgemart.validation import ValidationError, field_error

# code → (title, detail) of the problems a purchase can end in.
OUTCOMES: dict[str, tuple[str, str]] = {
    "insufficient_funds": ("Insufficient funds", "The wallet balance is too low"),
    "product_not_found": ("Product not found", "Unknown or unavailable product"),
    "out_of_stock": ("Out of stock", "Not enough stock for this quantity"),
    "price_changed": ("Price changed", "The price differs from expected_unit_price_cents"),
    "idempotency_key_reused": (REUSED_TITLE, REUSED_DETAIL),
    "purchases_disabled": ("Purchases are switched off", "Try again later"),
    "cannot_buy_own_product": (
        "Cannot buy own product",
        "Sellers cannot buy products from their own store",
    ),
}

PURCHASE_SQL = b"""
SELECT status, body, replayed, original_request_id
FROM purchase(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s * interval '1 s', %s * interval '1 s',
              %s, %s)
"""


class QueueUnavailableError(ProblemError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "service_unavailable",
            "Purchase queue unavailable",
            "The order could not be queued; nothing was charged. Retry with the same key.",
            headers={"Retry-After": "5"},
        )


def outcome_response(status: int, body: dict[str, Any], request_id: str | None) -> Response:
    """The response of a stored or new outcome; `request_id` is the one of the request that
    produced it (a replay's problem body keeps the original)."""
    if status in (201, 202):
        headers = {**NO_STORE, "Location": f"/purchases/{body['id']}"}
        return JSONResponse(body, status_code=status, headers=headers)
    code = str(body.get("code"))
    title, detail = OUTCOMES.get(code, ("Purchase failed", code))
    headers = dict(NO_STORE)
    extra: dict[str, Any] = {}
    if code == "purchases_disabled":
        headers["Retry-After"] = str(body.get("retry_after", 60))
    if "current_unit_price_cents" in body:
        extra["current_unit_price_cents"] = body["current_unit_price_cents"]
    # A replay carries the original response, request id included.
    return problem_response(
        status, code, title, detail, headers=headers, extra=extra, request_id=request_id
    )


def purchase_outcome(row: Mapping[str, Any]) -> str:
    """The `purchases` metric's outcome of what purchase() answered: `completed`, `queued`,
    the refusal's code, or `replayed` (an earlier request's outcome, counted then)."""
    if row["replayed"]:
        return "replayed"
    if row["status"] in (201, 202):
        return "completed" if row["status"] == 201 else "queued"
    return str(row["body"].get("code"))


async def record_failure(
    services: Services, tenant: Tenant, user: str, key: str, code: str, message: str
) -> None:
    """Best effort, in its own transaction: the purchase itself has been rolled back. The
    code is also the `purchases` metric's outcome."""
    metrics.record(metrics.PURCHASES, outcome=code)
    try:
        async with services.primary.connection(timeout_s=1) as conn, in_tenant(conn, tenant):
            await conn.execute(
                "INSERT INTO failed_transactions (user_sub, idempotency_key, error_code, message, "
                "request_id) VALUES (%s, %s, %s, %s, %s)",
                [user, key, code, message[:500], current_request_id()],
            )
    except Exception as exc:  # the database may be the thing that failed
        logger.warning("could not record failed purchase %s for %s: %r", code, user, exc)


async def create_purchase(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    key = inputs.headers.value(IDEMPOTENCY_KEY.name, str)
    product_id = inputs.body.value("product_id", uuid.UUID)
    quantity = inputs.body.value("quantity", int)
    expected = inputs.body.optional("expected_unit_price_cents", int)
    services = services_of(request)
    settings = services.settings
    tenant = tenant_of(request.scope)
    args = [
        tenant.id,
        principal.sub,
        key,
        fingerprint(inputs.sent_body),
        product_id,
        quantity,
        expected,
        tenant.fee_basis_points(settings.platform_fee_basis_points),
        current_request_id(),
        settings.idempotency_key_ttl_s,
        settings.idempotency_key_wait_s,
        services.purchase_queue is not None,
        settings.marketplace_currency,
    ]
    queue = services.purchase_queue

    async def attempt() -> Any:
        async with services.primary.connection() as conn:
            if queue is None:  # one statement, its own transaction: the direct path
                return await (await conn.execute(PURCHASE_SQL, args)).fetchone()
            async with conn.transaction():
                row = await (await conn.execute(PURCHASE_SQL, args)).fetchone()
                if row is not None and row["status"] == 202 and not row["replayed"]:
                    # Enqueued before the commit: a queued order always has its message.
                    try:
                        await queue.send(str(row["body"]["id"]), str(product_id), str(tenant.id))
                    except Exception as exc:  # boto3 raises many types; the order rolls back
                        logger.warning("purchase queue send failed: %r", exc)
                        raise QueueUnavailableError() from exc
                return row

    try:
        # Safe to repeat: if a lost connection hid a commit, the retry finds the key and
        # replays the outcome instead of buying twice.
        row = await services.retry.run(attempt)
    except psycopg.errors.LockNotAvailable:
        metrics.record(metrics.PURCHASES, outcome="idempotency_key_in_use")
        raise KeyInUseError() from None
    except CircuitOpenError:
        # Refused before anything ran: nothing to record in the database (nor a way to).
        metrics.record(metrics.PURCHASES, outcome="circuit_open")
        raise
    except QueueUnavailableError as exc:
        await record_failure(services, tenant, principal.sub, key, "queue_unavailable", repr(exc))
        raise
    except UNAVAILABLE_ERRORS as exc:
        # Recorded here; the app's unavailable handler answers 503 read_only_mode.
        await record_failure(services, tenant, principal.sub, key, "read_only_mode", repr(exc))
        raise
    except Exception as exc:
        await record_failure(services, tenant, principal.sub, key, "internal_error", repr(exc))
        raise
    if row is None:
        raise RuntimeError("purchase() returned no row")
    metrics.record(metrics.PURCHASES, outcome=purchase_outcome(row))
    if row["status"] == 201 and not row["replayed"]:
        # Committed: the stock moved, on its pages and for its live subscribers.
        await services.invalidate(
            stock_changed([str(product_id)], tenant=tenant)
            | stock_pushed([str(product_id)], tenant=tenant)
        )
    response = outcome_response(row["status"], row["body"], row["original_request_id"])
    response.headers.update(replay_headers(row["replayed"], row["original_request_id"]))
    return response


class OrderNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "order_not_found", "Order not found")


# The order document is order_json() (edgemart/sql/order_json.sql), as 201 and 202 answer it.
ORDER_SELECT = "SELECT order_json(o) AS document, o.created_at, o.id FROM orders o"
ORDER_SQL = f"{ORDER_SELECT} WHERE o.id = %s AND o.user_sub = %s".encode()
# Newest first, keyset on (created_at, id): orders_user_created_id_idx (migration 0020),
# scanned backwards. The next page starts strictly after the last row of this one.
_ORDER_PAGE = " ORDER BY o.created_at DESC, o.id DESC LIMIT %s"
FIRST_ORDERS_SQL = f"{ORDER_SELECT} WHERE o.user_sub = %s{_ORDER_PAGE}".encode()
NEXT_ORDERS_SQL = (
    f"{ORDER_SELECT} WHERE o.user_sub = %s AND (o.created_at, o.id) < (%s, %s){_ORDER_PAGE}"
).encode()


async def get_purchase(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    order_id = inputs.path.value("order_id", uuid.UUID)
    async with (
        services_of(request).primary.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        row = await (await conn.execute(ORDER_SQL, [order_id, principal.sub])).fetchone()
    if row is None:
        raise OrderNotFoundError()  # also for other users' orders: no existence leak
    return JSONResponse(row["document"], headers=NO_STORE)


def order_position(key: bytes, owner: str, cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) of the last order of the previous page, from a cursor."""
    created_at, order_id = decode_cursor(key, owner, cursor, length=2)
    try:
        return datetime.fromisoformat(created_at), uuid.UUID(order_id)
    except (TypeError, ValueError):  # signed by us, so not expected: still a 422, never a 500
        raise ValidationError([field_error("cursor", "query", "is not a valid cursor")]) from None


async def list_purchases(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    limit = inputs.query.value("limit", int)
    cursor = inputs.query.optional("cursor", str)
    services = services_of(request)
    key = cursor_key(services.settings.cursor_secret, tenant_of(request.scope))
    owner = query_fingerprint("orders", principal.sub)  # a cursor is its user's only
    if cursor is None:
        statement, args = FIRST_ORDERS_SQL, [principal.sub, limit + 1]
    else:
        created_at, order_id = order_position(key, owner, cursor)
        statement, args = NEXT_ORDERS_SQL, [principal.sub, created_at, order_id, limit + 1]
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        rows = await (await conn.execute(statement, args)).fetchall()
    page, next_cursor = next_page(
        rows, limit, key, owner, lambda last: [last["created_at"].isoformat(), str(last["id"])]
    )
    return JSONResponse(
        {"orders": [row["document"] for row in page], "next_cursor": next_cursor},
        headers=NO_STORE,
    )


async def wallet(request: Request) -> Response:
    principal = inputs_of(request).caller
    async with (
        services_of(request).primary.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        row = await (
            await conn.execute(
                "SELECT balance_cents FROM wallets WHERE user_sub = %s", [principal.sub]
            )
        ).fetchone()
    balance = row["balance_cents"] if row else 0
    return JSONResponse({"sub": principal.sub, "balance_cents": balance}, headers=NO_STORE)


routes = starlette_routes(
    "purchase", by_name(create_purchase, list_purchases, get_purchase, wallet)
)
app = build_app(routes)
handler = lambda_handler(app, "purchase")

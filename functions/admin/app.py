"""Admin function (admin role): kill switches with a cooldown, wallet credits, a product's
purchase mode, popular-search terms hidden from the public list. Every change is written to
`audit_log` with the acting user and request id, in the same transaction as the change. The
role and each route's inputs are checked before its handler runs, as the route table declares
them (edgemart.requestinputs).

A wallet credit moves money, so it takes the acting admin's Idempotency-Key as a purchase
does: one call of `credit_wallet()` (edgemart/sql) claims the key, credits, audits and stores
the response; a retry replays it (edgemart/idempotency.py) instead of crediting twice.

Everything is the request's tenant's (docs/decisions/0040): each transaction sets it
(`in_tenant`), `credit_wallet()` takes it first; switches, wallets, keys and hidden terms of
another tenant are never seen."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.auth import Principal
from edgemart.cache import NO_STORE
from edgemart.changes import popular_searches_changed
from edgemart.counters import normalise_query
from edgemart.db import Connection
from edgemart.errors import ProblemError, problem_response
from edgemart.idempotency import (
    REUSED_DETAIL,
    REUSED_TITLE,
    KeyInUseError,
    fingerprint,
    replay_headers,
)
from edgemart.products import ProductNotFoundError, rfc3339
from edgemart.requestid import current_request_id
from edgemart.requestinputs import inputs_of
from edgemart.routetable import IDEMPOTENCY_KEY
from edgemart.routing import by_name, starlette_routes
from edgemart.services import services_of
from edgemart.tenancy import in_tenant, tenant_of
from edgemart.validation import ValidationError, field_error


class KillSwitchNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "kill_switch_not_found", "Kill switch not found")


class QueuedModeUnavailableError(ProblemError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "queued_mode_unavailable",
            "Queued mode unavailable",
            "No purchase queue is configured, so purchases of this product would stay direct; "
            "nothing was changed",
            headers=NO_STORE,
        )


class CooldownActiveError(ProblemError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            409,
            "cooldown_active",
            "Cooldown active",
            f"This switch changed recently; it can change again in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


async def audit(
    conn: Connection,
    principal: Principal,
    action: str,
    entity: str,
    entity_id: str,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor_sub, action, entity_type, entity_id, details, request_id) "
        "VALUES (%s, %s, %s, %s, %s::jsonb, %s)",
        [principal.sub, action, entity, entity_id, json.dumps(details), current_request_id()],
    )


SWITCH_JSON = f"""json_build_object(
    'name', name, 'enabled', enabled, 'reason', reason, 'changed_by', changed_by,
    'changed_at', {rfc3339("changed_at")}, 'cooldown_until', {rfc3339("cooldown_until")})"""


async def switch_document(conn: Connection, name: str) -> Any:
    row = await (
        await conn.execute(
            f"SELECT {SWITCH_JSON} AS switch FROM kill_switches WHERE name = %s".encode(), [name]
        )
    ).fetchone()
    if row is None:
        raise KillSwitchNotFoundError()
    return row["switch"]


async def list_switches(request: Request) -> Response:
    async with (
        services_of(request).primary.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        rows = await (
            await conn.execute(
                f"SELECT {SWITCH_JSON} AS switch FROM kill_switches ORDER BY name".encode()
            )
        ).fetchall()
    return JSONResponse({"kill_switches": [row["switch"] for row in rows]}, headers=NO_STORE)


async def get_switch(request: Request) -> Response:
    name = inputs_of(request).path.value("name", str)  # a switch: anything else was 404
    async with (
        services_of(request).primary.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        document = await switch_document(conn, name)
    return JSONResponse(document, headers=NO_STORE)


async def put_switch(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    name = inputs.path.value("name", str)
    enabled = inputs.body.value("enabled", bool)
    reason = inputs.body.optional("reason", str) or ""
    services = services_of(request)
    cooldown = services.settings.kill_switch_cooldown_s
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        current = await (
            await conn.execute(
                "SELECT enabled, "
                "GREATEST(0, ceil(extract(epoch FROM cooldown_until - now())))::int AS wait "
                "FROM kill_switches WHERE name = %s FOR UPDATE",
                [name],
            )
        ).fetchone()
        if current is None:
            raise KillSwitchNotFoundError()
        if current["enabled"] != enabled:
            if current["wait"]:
                raise CooldownActiveError(current["wait"])
            await conn.execute(
                "UPDATE kill_switches SET enabled = %s, reason = %s, changed_by = %s, "
                "changed_at = now(), cooldown_until = now() + %s * interval '1 s' WHERE name = %s",
                [enabled, reason, principal.sub, cooldown, name],
            )
            await audit(
                conn,
                principal,
                "kill_switch.set",
                "kill_switch",
                name,
                {"enabled": enabled, "reason": reason},
            )
        document = await switch_document(conn, name)
    return JSONResponse(document, headers=NO_STORE)


CREDIT_SQL = b"""
SELECT status, body, replayed, original_request_id
FROM credit_wallet(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s * interval '1 s',
                   %s * interval '1 s')
"""


async def credit_wallet(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    sub = inputs.path.value("sub", str)
    key = inputs.headers.value(IDEMPOTENCY_KEY.name, str)
    amount = inputs.body.value("amount_cents", int)
    reason = inputs.body.optional("reason", str) or ""
    services = services_of(request)
    settings = services.settings
    args = [
        tenant_of(request.scope).id,
        principal.sub,  # keys belong to the acting admin, as a buyer's to the buyer
        key,
        # The path is part of the request.
        fingerprint({"credit_to": sub, "body": inputs.sent_body}),
        sub,
        amount,
        reason,
        settings.marketplace_currency,
        current_request_id(),
        settings.idempotency_key_ttl_s,
        settings.idempotency_key_wait_s,
    ]

    async def attempt() -> Any:
        async with services.primary.connection() as conn:
            return await (await conn.execute(CREDIT_SQL, args)).fetchone()

    try:
        # Safe to repeat: a retry after a commit the lost connection hid finds the key.
        row = await services.retry.run(attempt)
    except psycopg.errors.LockNotAvailable:
        raise KeyInUseError() from None
    if row is None:
        raise RuntimeError("credit_wallet() returned no row")
    headers = {**NO_STORE, **replay_headers(row["replayed"], row["original_request_id"])}
    if row["status"] == 422:
        return problem_response(
            422, "idempotency_key_reused", REUSED_TITLE, REUSED_DETAIL, headers=headers
        )
    return JSONResponse(row["body"], status_code=row["status"], headers=headers)


async def set_purchase_mode(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    product_id = str(inputs.path.value("product_id", uuid.UUID))
    mode = inputs.body.value("mode", str)
    services = services_of(request)
    if mode == "queued" and services.purchase_queue is None:
        raise QueuedModeUnavailableError()  # purchases would stay direct: refuse, change nothing
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        row = await (
            await conn.execute(
                "UPDATE products SET purchase_mode = %s, updated_at = now() WHERE id = %s "
                "RETURNING id",
                [mode, product_id],
            )
        ).fetchone()
        if row is None:
            raise ProductNotFoundError()
        await audit(conn, principal, "product.purchase_mode", "product", product_id, {"mode": mode})
    return JSONResponse({"product_id": product_id, "mode": mode}, headers=NO_STORE)


HIDE_SQL = b"""
INSERT INTO hidden_searches (query, reason, hidden_by) VALUES (%s, %s, %s)
ON CONFLICT (tenant_id, query) DO UPDATE
SET reason = excluded.reason, hidden_by = excluded.hidden_by, hidden_at = now()
"""
UNHIDE_SQL = b"DELETE FROM hidden_searches WHERE query = %s"


def search_term(raw: str) -> str:
    """The body's `query`, normalised as search counting normalises it."""
    query = normalise_query(raw)
    if not query:
        raise ValidationError([field_error("query", "body", "must not be only spaces")])
    return query


async def set_popular_search_hidden(request: Request) -> Response:
    """Hide a term from `GET /marketplace/search/popular` (its counting goes on), or show it
    again; audited in the same transaction."""
    inputs = inputs_of(request)
    principal = inputs.caller
    query = search_term(inputs.body.value("query", str))
    hidden = inputs.body.value("hidden", bool)
    reason = inputs.body.optional("reason", str) or ""
    services = services_of(request)
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        if hidden:
            await conn.execute(HIDE_SQL, [query, reason, principal.sub])
        else:
            await conn.execute(UNHIDE_SQL, [query])
        action = "popular_search.hide" if hidden else "popular_search.unhide"
        details = {"hidden": hidden, "reason": reason}
        await audit(conn, principal, action, "popular_search", str(query), details)
    await services.invalidate(popular_searches_changed(tenant=tenant_of(request.scope)))
    return JSONResponse({"query": query, "hidden": hidden}, headers=NO_STORE)


routes = starlette_routes(
    "admin",
    by_name(
        list_switches,
        get_switch,
        put_switch,
        credit_wallet,
        set_purchase_mode,
        set_popular_search_hidden,
    ),
)
app = build_app(routes)
handler = lambda_handler(app, "admin")

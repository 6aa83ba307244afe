"""Admin function (admin role): kill switches with a cooldown, wallet credits, a product's
purchase mode, popular-search terms hidden from the public list. Every change is written to
`audit_log` with the acting user and request id, in the same transaction as the change."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgemart.appfactory import build_app, lambda_handler
from edgemart.auth import ADMIN_ROLE, Principal, authenticate, require_role
from edgemart.cache import CACHE_RULES, NO_STORE
from edgemart.counters import MAX_QUERY_LENGTH, normalise_query
from edgemart.db import Connection
from edgemart.errors import ProblemError
from edgemart.products import ProductNotFoundError, rfc3339
from edgemart.requestid import current_request_id
from edgemart.services import services_of
from edgemart.validation import (
    JsonObject,
    ValidationError,
    is_clean_identifier,
    json_object,
    path_text,
    path_uuid,
    text_problem,
)

SWITCHES = ("purchases", "listings")
MODES = ("direct", "queued")
SUBJECT = re.compile(r"[^\s]{1,255}")


class KillSwitchNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "kill_switch_not_found", "Kill switch not found")


class CooldownActiveError(ProblemError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            409,
            "cooldown_active",
            "Cooldown active",
            f"This switch changed recently; it can change again in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


async def admin(request: Request) -> Principal:
    principal = await authenticate(request)
    require_role(principal, (ADMIN_ROLE,))
    return principal


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


def switch_name(request: Request) -> str:
    name = path_text(request, "name")
    if name not in SWITCHES:
        raise KillSwitchNotFoundError()
    return name


async def get_switch(request: Request) -> Response:
    await admin(request)
    name = switch_name(request)
    async with services_of(request).primary.connection() as conn:
        document = await switch_document(conn, name)
    return JSONResponse(document, headers=NO_STORE)


async def put_switch(request: Request) -> Response:
    principal = await admin(request)
    name = switch_name(request)
    body = await json_object(request)
    enabled = body.boolean("enabled", required=True)
    reason = body.text("reason", max_length=500, multiline=True) or ""
    body.finish()
    services = services_of(request)
    cooldown = services.settings.kill_switch_cooldown_s
    async with services.primary.connection() as conn, conn.transaction():
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


async def credit_wallet(request: Request) -> Response:
    principal = await admin(request)
    sub = path_text(request, "sub")
    if not SUBJECT.fullmatch(sub) or not is_clean_identifier(sub):
        raise ValidationError([{"field": "sub", "location": "path", "message": "is not a subject"}])
    body = await json_object(request)
    amount = body.integer("amount_cents", required=True, low=1, high=1_000_000_000)
    reason = body.text("reason", max_length=500, multiline=True) or ""
    body.finish()
    services = services_of(request)
    async with services.primary.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO wallets (user_sub, balance_cents, currency) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_sub) DO UPDATE SET balance_cents = wallets.balance_cents + "
                "excluded.balance_cents, updated_at = now() RETURNING balance_cents",
                [sub, amount, services.settings.marketplace_currency],
            )
        ).fetchone()
        await audit(
            conn,
            principal,
            "wallet.credit",
            "wallet",
            sub,
            {"amount_cents": amount, "reason": reason},
        )
    balance = row["balance_cents"] if row else 0
    return JSONResponse({"sub": sub, "balance_cents": balance}, headers=NO_STORE)


async def set_purchase_mode(request: Request) -> Response:
    principal = await admin(request)
    product_id = str(path_uuid(request, "product_id"))
    body = await json_object(request)
    mode = body.text("mode", required=True, max_length=10)
    if mode is not None and mode not in MODES:
        body.error("mode", f"must be one of {', '.join(MODES)}")
    body.finish()
    async with services_of(request).primary.connection() as conn, conn.transaction():
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
ON CONFLICT (query) DO UPDATE
SET reason = excluded.reason, hidden_by = excluded.hidden_by, hidden_at = now()
"""
UNHIDE_SQL = b"DELETE FROM hidden_searches WHERE query = %s"


def search_term(body: JsonObject) -> str | None:
    """The body's `query`, normalised as search counting normalises it."""
    raw = body.text("query", required=True, min_length=1, max_length=MAX_QUERY_LENGTH)
    if raw is None:
        return None
    problem = text_problem(raw)
    query = normalise_query(raw)
    if problem is not None:
        body.error("query", problem)
    elif not query:
        body.error("query", "must not be only spaces")
    return query


async def set_popular_search_hidden(request: Request) -> Response:
    """Hide a term from `GET /marketplace/search/popular` (its counting goes on), or show it
    again; audited in the same transaction."""
    principal = await admin(request)
    body = await json_object(request)
    query = search_term(body)
    hidden = body.boolean("hidden", required=True)
    reason = body.text("reason", max_length=500) or ""
    problem = text_problem(reason, multiline=True)
    if problem is not None:
        body.error("reason", problem)
    body.finish()
    services = services_of(request)
    async with services.primary.connection() as conn, conn.transaction():
        if hidden:
            await conn.execute(HIDE_SQL, [query, reason, principal.sub])
        else:
            await conn.execute(UNHIDE_SQL, [query])
        action = "popular_search.hide" if hidden else "popular_search.unhide"
        details = {"hidden": hidden, "reason": reason}
        await audit(conn, principal, action, "popular_search", str(query), details)
    services.cache.invalidate(CACHE_RULES["popular_searches"].name)  # this process's copy
    return JSONResponse({"query": query, "hidden": hidden}, headers=NO_STORE)


routes = [
    Route("/admin/kill-switches/{name}", get_switch, methods=["GET"]),
    Route("/admin/kill-switches/{name}", put_switch, methods=["PUT"]),
    Route("/admin/wallets/{sub}/credits", credit_wallet, methods=["POST"]),
    Route("/admin/products/{product_id}/purchase-mode", set_purchase_mode, methods=["PUT"]),
    Route("/admin/popular-searches/hidden", set_popular_search_hidden, methods=["PUT"]),
]
app = build_app(routes)
handler = lambda_handler(app)

"""Store function: public store pages and product detail, and the seller's side.

`GET /stores/{slug}` pages through a store's listed products newest first with keyset
cursors (the `(store_id, created_at DESC, id DESC)` index); `GET /products/{id}` is the
product detail. Both are cached per §5; views are counted in a buffer that refresh_views
flushes, never with a write per request.

Sellers (bearer JWT): `POST /stores`, `POST /products`, `PATCH /products/{id}` (owner only,
gated by the `listings` kill switch) and `GET /stores/{slug}/payouts` (owner only; anyone
else gets 404, so store ownership does not leak). A new listing is live at once with
`quality_score = null` (pending verification). Writes drop this process's cached copies, so
it serves the new data at once; other processes and the CDN catch up within the route's TTL.

Every statement runs in the request's tenant (`in_tenant`, docs/decisions/0040): a store slug
is unique within its tenant, and another tenant's store, product or payouts are 404 exactly as
if they did not exist. A product view is counted for its tenant.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.errors import UniqueViolation
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.auth import ForbiddenError
from edgemart.cache import CACHE_RULES, NO_STORE, normalised_query, serve_cached
from edgemart.changes import (
    listing_changed,
    listing_created,
    product_tag,
    product_tags,
    stock_pushed,
    store_tag,
)
from edgemart.counters import view_entry
from edgemart.currencies import ISO_4217_CODES
from edgemart.cursor import cursor_key, decode_cursor, next_page, query_fingerprint
from edgemart.db import Connection
from edgemart.errors import ProblemError
from edgemart.products import ProductNotFoundError, product_summary, rfc3339
from edgemart.requestinputs import inputs_of
from edgemart.routing import by_name, starlette_routes
from edgemart.services import services_of
from edgemart.tenancy import in_tenant, tenant_of
from edgemart.validation import ValidationError, field_error

STORE_RULE = CACHE_RULES["store_page"]
PRODUCT_RULE = CACHE_RULES["product_page"]


class StoreNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "store_not_found", "Store not found")


STORE_SQL = f"""
SELECT s.id, json_build_object(
    'slug', s.slug, 'name', s.name, 'description', s.description, 'rating', s.rating,
    'product_count', (SELECT count(*) FROM products p
                      WHERE p.store_id = s.id AND p.is_available AND p.is_approved),
    'created_at', {rfc3339("s.created_at")}
) AS store
FROM stores s WHERE s.slug = %s AND s.is_active
""".encode()


def sort_key(row: Any) -> list[Any]:
    """The (created_at, id) a store or payouts page row carries as `k0`, `k1`."""
    return [row["k0"], row["k1"]]


def store_page_sql(category: bool, after: bool) -> bytes:
    conditions = ["p.store_id = %s", "p.is_available", "p.is_approved"]
    if category:
        conditions.append("p.category_id = (SELECT id FROM categories WHERE slug = %s)")
    if after:
        conditions.append("(p.created_at, p.id) < (%s::timestamptz, %s::uuid)")
    return (
        f"SELECT {product_summary()} AS item, p.created_at::text AS k0, p.id::text AS k1 "
        "FROM products p JOIN stores s ON s.id = p.store_id "
        f"WHERE {' AND '.join(conditions)} ORDER BY p.created_at DESC, p.id DESC LIMIT %s"
    ).encode()


async def load_store_page(
    request: Request, slug: str, category: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    services = services_of(request)
    key = cursor_key(services.settings.cursor_secret, tenant_of(request.scope))
    fingerprint = query_fingerprint("store", slug, category)
    position = decode_cursor(key, fingerprint, cursor, length=2) if cursor else None
    async with services.reads.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        store = await (await conn.execute(STORE_SQL, [slug])).fetchone()
        if store is None:
            raise StoreNotFoundError()
        args: list[Any] = [store["id"]]
        if category is not None:
            args.append(category)
        if position is not None:
            args.extend(position)
        args.append(limit + 1)
        sql = store_page_sql(category is not None, position is not None)
        rows = await (await conn.execute(sql, args)).fetchall()
    page, next_cursor = next_page(rows, limit, key, fingerprint, sort_key)
    return {
        "store": store["store"],
        "products": [row["item"] for row in page],
        "next_cursor": next_cursor,
    }


async def store_page(request: Request) -> Response:
    inputs = inputs_of(request)
    slug = inputs.path.value("slug", str)  # a slug: anything else was 404 (no such store)
    limit = inputs.query.value("limit", int)
    cursor = inputs.query.optional("cursor", str)
    category = inputs.query.optional("category", str)
    services = services_of(request)
    cache_key = f"store:{slug}?{normalised_query(request, STORE_RULE)}"
    return await serve_cached(
        request,
        services.cache,
        cache_key,
        STORE_RULE,
        lambda: load_store_page(request, slug, category, limit, cursor),
        retry=services.retry,
        tags=lambda page: [store_tag(slug), *product_tags(page["products"])],
    )


PRODUCT_SQL = f"""
SELECT ({product_summary()}::jsonb || jsonb_build_object(
    'description', p.description, 'stock_available', p.stock)) AS product
FROM products p JOIN stores s ON s.id = p.store_id
WHERE p.id = %s AND p.is_available AND p.is_approved AND s.is_active
""".encode()


async def load_product(request: Request, product_id: str) -> Any:
    async with (
        services_of(request).reads.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        row = await (await conn.execute(PRODUCT_SQL, [product_id])).fetchone()
    if row is None:
        raise ProductNotFoundError()
    return row["product"]


async def product_page(request: Request) -> Response:
    product_id = str(inputs_of(request).path.value("product_id", uuid.UUID))
    services = services_of(request)
    response = await serve_cached(
        request,
        services.cache,
        f"product:{product_id}",
        PRODUCT_RULE,
        lambda: load_product(request, product_id),
        retry=services.retry,
        tags=lambda _: [product_tag(product_id)],
    )
    if response.status_code in (200, 304):  # a product that exists (an unknown one raised 404)
        await services.view_counts.record(view_entry(product_id, tenant_of(request.scope).id))
    return response


class StoreSlugTakenError(ProblemError):
    def __init__(self, slug: str) -> None:
        super().__init__(409, "store_slug_taken", "Store slug taken", f"'{slug}' is taken")


class ListingsDisabledError(ProblemError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            503,
            "listings_disabled",
            "Listings are switched off",
            "New and changed listings are paused; try again later",
            headers={"Retry-After": str(retry_after_s)},
        )


PRODUCT_FROM_P = f"{product_summary()} AS product FROM p JOIN stores s ON s.id = p.store_id"

STORE_JSON = f"""json_build_object(
    'slug', s.slug, 'name', s.name, 'description', s.description, 'rating', s.rating,
    'product_count', 0, 'created_at', {rfc3339("s.created_at")})"""


async def create_store(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    slug = inputs.body.value("slug", str)
    name = inputs.body.value("name", str)
    description = inputs.body.optional("description", str) or ""
    sql = (
        "INSERT INTO stores AS s (slug, name, description, owner_sub) VALUES (%s, %s, %s, %s) "
        f"RETURNING {STORE_JSON} AS store"
    )
    try:
        async with (
            services_of(request).primary.connection() as conn,
            in_tenant(conn, tenant_of(request.scope)),
        ):
            row = await (
                await conn.execute(sql.encode(), [slug, name, description, principal.sub])
            ).fetchone()
    except UniqueViolation:
        raise StoreSlugTakenError(slug) from None
    return created(row["store"] if row else None, f"/stores/{slug}")


def created(document: Any, location: str) -> JSONResponse:
    """201 with the new resource and where it lives."""
    return JSONResponse(document, status_code=201, headers={**NO_STORE, "Location": location})


def listing_currency(currency: str | None, marketplace_currency: str) -> str:
    """One currency per marketplace: a listing may name it (or leave it out), nothing else."""
    if currency is None:
        return marketplace_currency
    if currency not in ISO_4217_CODES:
        problem = "must be an ISO 4217 currency code"
    elif currency != marketplace_currency:
        problem = f"must be this marketplace's currency, {marketplace_currency}"
    else:
        return currency
    raise ValidationError([field_error("currency", "body", problem)])


async def _ensure_listings_enabled(conn: Connection) -> None:
    row = await (
        await conn.execute(
            "SELECT enabled, GREATEST(1, ceil(extract(epoch FROM cooldown_until - now())))::int "
            "AS retry FROM kill_switches WHERE name = 'listings'"
        )
    ).fetchone()
    if row and row["enabled"]:
        raise ListingsDisabledError(max(60, row["retry"] or 60))


async def create_product(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    body = inputs.body
    store_slug = body.value("store_slug", str)
    category_id = body.value("category_id", int)
    name = body.value("name", str)
    description = body.optional("description", str) or ""
    price = body.value("price_cents", int)
    stock = body.value("stock", int)
    services = services_of(request)
    currency = listing_currency(
        body.optional("currency", str), services.settings.marketplace_currency
    )
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        await _ensure_listings_enabled(conn)
        store = await (
            await conn.execute(
                "SELECT id, owner_sub FROM stores WHERE slug = %s AND is_active", [store_slug]
            )
        ).fetchone()
        category = await (
            await conn.execute("SELECT id FROM categories WHERE id = %s", [category_id])
        ).fetchone()
        errors = []
        if store is None:
            errors.append(field_error("store_slug", "body", "unknown store"))
        if category is None:
            errors.append(field_error("category_id", "body", "unknown category"))
        if store is None or category is None:
            raise ValidationError(errors)
        if store["owner_sub"] != principal.sub:
            raise ForbiddenError("Only the store's owner can list products in it")
        row = await (
            await conn.execute(
                (
                    "WITH p AS (INSERT INTO products (store_id, category_id, name, description, "
                    "price_cents, currency, stock, quality_score) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, NULL) RETURNING *) "
                    f"SELECT {PRODUCT_FROM_P}"
                ).encode(),
                [store["id"], category_id, name, description, price, currency, stock],
            )
        ).fetchone()
    if row is None:
        raise RuntimeError("INSERT ... RETURNING gave no row")
    await services.invalidate(listing_created(store_slug, tenant=tenant_of(request.scope)))
    return created(row["product"], f"/products/{row['product']['id']}")


async def update_product(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    product_id = str(inputs.path.value("product_id", uuid.UUID))
    changes = dict(inputs.body)  # the columns sent (at least one), each checked by the table
    services = services_of(request)
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        await _ensure_listings_enabled(conn)
        owner = await (
            await conn.execute(
                "SELECT s.owner_sub, s.slug FROM products p JOIN stores s ON s.id = p.store_id "
                "WHERE p.id = %s",
                [product_id],
            )
        ).fetchone()
        if owner is None:
            raise ProductNotFoundError()
        if owner["owner_sub"] != principal.sub:
            raise ForbiddenError("Only the store's owner can change its products")
        assignments = ", ".join(f"{column} = %s" for column in changes)
        row = await (
            await conn.execute(
                (
                    f"WITH p AS (UPDATE products SET {assignments}, updated_at = now() "
                    "WHERE id = %s RETURNING *) "
                    f"SELECT {PRODUCT_FROM_P}"
                ).encode(),
                [*changes.values(), product_id],
            )
        ).fetchone()
    # Its pages, and its live subscribers (an edit may set the stock).
    tenant = tenant_of(request.scope)
    await services.invalidate(
        listing_changed(product_id, owner["slug"], tenant=tenant)
        | stock_pushed([product_id], tenant=tenant)
    )
    return JSONResponse(row["product"] if row else None, headers=NO_STORE)


PAYOUTS_SQL = f"""
SELECT json_build_object('order_id', po.order_id, 'amount_cents', po.amount_cents,
                         'fee_cents', po.fee_cents, 'created_at', {rfc3339("po.created_at")})
       AS payout, po.created_at::text AS k0, po.id::text AS k1
FROM payouts po WHERE po.store_id = %s {{after}}
ORDER BY po.created_at DESC, po.id DESC LIMIT %s
"""


async def store_payouts(request: Request) -> Response:
    inputs = inputs_of(request)
    principal = inputs.caller
    slug = inputs.path.value("slug", str)
    limit = inputs.query.value("limit", int)
    cursor = inputs.query.optional("cursor", str)
    services = services_of(request)
    key = cursor_key(services.settings.cursor_secret, tenant_of(request.scope))
    fingerprint = query_fingerprint("payouts", slug, principal.sub)
    position = decode_cursor(key, fingerprint, cursor, length=2) if cursor else None
    async with services.primary.connection() as conn, in_tenant(conn, tenant_of(request.scope)):
        store = await (
            await conn.execute(
                "SELECT id, (SELECT json_build_object('total', coalesce(sum(amount_cents), 0), "
                "'fees', coalesce(sum(fee_cents), 0)) FROM payouts WHERE store_id = s.id) AS sums "
                "FROM stores s WHERE slug = %s AND owner_sub = %s",
                [slug, principal.sub],
            )
        ).fetchone()
        if store is None:
            raise StoreNotFoundError()
        after = "AND (po.created_at, po.id) < (%s::timestamptz, %s::uuid)" if position else ""
        args = [store["id"], *(position or []), limit + 1]
        rows = await (await conn.execute(PAYOUTS_SQL.format(after=after).encode(), args)).fetchall()
    page, next_cursor = next_page(rows, limit, key, fingerprint, sort_key)
    return JSONResponse(
        {
            "payouts": [row["payout"] for row in page],
            "total_cents": store["sums"]["total"],
            "total_fee_cents": store["sums"]["fees"],
            "next_cursor": next_cursor,
        },
        headers=NO_STORE,
    )


routes = starlette_routes(
    "store",
    by_name(create_store, store_page, store_payouts, create_product, product_page, update_product),
)
app = build_app(routes)
handler = lambda_handler(app, "store")

"""Store function: public store pages and product detail.

`GET /stores/{slug}` pages through a store's listed products newest first with keyset
cursors (the `(store_id, created_at DESC, id DESC)` index); `GET /products/{id}` is the
product detail. Both are cached per §5; views are counted in a buffer that refresh_views
flushes, never with a write per request.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgemart.appfactory import build_app, lambda_handler
from edgemart.cache import CACHE_RULES, cached_response, normalised_query
from edgemart.cursor import cursor_key, decode_cursor, encode_cursor, query_fingerprint
from edgemart.errors import ProblemError
from edgemart.products import product_summary, rfc3339
from edgemart.services import services_of
from edgemart.validation import QueryParams, ValidationError, path_uuid

STORE_RULE = CACHE_RULES["store_page"]
PRODUCT_RULE = CACHE_RULES["product_page"]


class StoreNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "store_not_found", "Store not found")


class ProductNotFoundError(ProblemError):
    def __init__(self) -> None:
        super().__init__(404, "product_not_found", "Product not found")


STORE_SQL = f"""
SELECT s.id, json_build_object(
    'slug', s.slug, 'name', s.name, 'description', s.description, 'rating', s.rating,
    'product_count', (SELECT count(*) FROM products p
                      WHERE p.store_id = s.id AND p.is_available AND p.is_approved),
    'created_at', {rfc3339("s.created_at")}
) AS store
FROM stores s WHERE s.slug = %s AND s.is_active
""".encode()


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
    key = cursor_key(services.settings.cursor_secret)
    fingerprint = query_fingerprint("store", slug, category)
    position = decode_cursor(key, fingerprint, cursor) if cursor else None
    if position is not None and len(position) != 2:
        raise ValidationError(
            [{"field": "cursor", "location": "query", "message": "is not a valid cursor"}]
        )
    async with services.replica.connection() as conn:
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
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(key, fingerprint, [page[-1]["k0"], page[-1]["k1"]])
    return {
        "store": store["store"],
        "products": [row["item"] for row in page],
        "next_cursor": next_cursor,
    }


async def store_page(request: Request) -> Response:
    slug = str(request.path_params["slug"])
    query = QueryParams(request, ("limit", "cursor", "category"))
    limit = query.integer("limit", default=24, low=1, high=50) or 24
    cursor = query.text("cursor", max_length=1000)
    category = query.text("category", max_length=60)
    query.raise_if_invalid()
    services = services_of(request)
    cache_key = f"store:{slug}?{normalised_query(request, STORE_RULE)}"
    rendered = await services.cache.get_or_load(
        cache_key,
        STORE_RULE.s_maxage,
        lambda: load_store_page(request, slug, category, limit, cursor),
    )
    return cached_response(request, rendered, STORE_RULE)


PRODUCT_SQL = f"""
SELECT ({product_summary()}::jsonb || jsonb_build_object(
    'description', p.description, 'stock_available', p.stock)) AS product
FROM products p JOIN stores s ON s.id = p.store_id
WHERE p.id = %s AND p.is_available AND p.is_approved AND s.is_active
""".encode()


async def load_product(request: Request, product_id: str) -> Any:
    async with services_of(request).replica.connection() as conn:
        row = await (await conn.execute(PRODUCT_SQL, [product_id])).fetchone()
    if row is None:
        raise ProductNotFoundError()
    return row["product"]


async def product_page(request: Request) -> Response:
    product_id = str(path_uuid(request, "product_id"))
    QueryParams(request, ()).raise_if_invalid()
    services = services_of(request)
    rendered = await services.cache.get_or_load(
        f"product:{product_id}", PRODUCT_RULE.s_maxage, lambda: load_product(request, product_id)
    )
    await services.view_counts.record(product_id)
    return cached_response(request, rendered, PRODUCT_RULE)


routes = [
    Route("/stores/{slug}", store_page, methods=["GET"]),
    Route("/products/{product_id}", product_page, methods=["GET"]),
]
app = build_app(routes)
handler = lambda_handler(app)

"""Home function: `GET /marketplace/home`, the BFF of the marketplace's front page.

One query, one round trip, whatever the catalog size: categories with counts from
`mv_category_counts` and the three lists from `mv_hot_products` (refreshed every five
minutes by refresh_views), assembled into the response JSON by PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgemart.appfactory import build_app, lambda_handler
from edgemart.cache import CACHE_RULES, cached_response
from edgemart.products import product_summary, rfc3339
from edgemart.services import services_of

RULE = CACHE_RULES["home"]
LIST_SIZE = 10


def _list(order_by: str) -> str:
    summary = product_summary(product="h", store_slug="h.store_slug", store_name="h.store_name")
    return f"""(SELECT coalesce(json_agg(item), '[]') FROM (
        SELECT {summary} AS item FROM mv_hot_products h ORDER BY {order_by} LIMIT {LIST_SIZE}
    ) ranked)"""


HOME_SQL = f"""
SELECT json_build_object(
    'categories', (SELECT coalesce(json_agg(json_build_object(
            'id', c.id, 'slug', c.slug, 'name', c.name, 'icon', c.icon, 'color', c.color,
            'product_count', c.product_count) ORDER BY c.name), '[]')
        FROM mv_category_counts c),
    'hot', {_list("h.sold_count DESC, h.id")},
    'top_rated', {_list("h.quality_score DESC NULLS LAST, h.rating DESC NULLS LAST, h.id")},
    'new_arrivals', {_list("h.created_at DESC, h.id DESC")},
    'generated_at', {rfc3339("now()")}
) AS home
"""


async def load_home(request: Request) -> Any:
    async with services_of(request).replica.connection() as conn:
        row = await (await conn.execute(HOME_SQL.encode())).fetchone()
    return row["home"] if row else None


async def home(request: Request) -> Response:
    services = services_of(request)
    rendered = await services.cache.get_or_load("home", RULE.s_maxage, lambda: load_home(request))
    return cached_response(request, rendered, RULE)


routes = [Route("/marketplace/home", home, methods=["GET"])]
app = build_app(routes)
handler = lambda_handler(app)

"""Home function: `GET /marketplace/home`, the BFF of the marketplace's front page.

The document (categories with counts from `category_counts`, the three lists from
`home_products`) is assembled by PostgreSQL in one query, `HOME_SQL`. refresh_views runs it
right after rebuilding the lists and keeps the result in `home_snapshot`, so a cache miss
here reads one row; before the first refresh, the document is assembled live. All of it is
the request's tenant's (`in_tenant`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from edgemart.appfactory import build_app, lambda_handler
from edgemart.cache import CACHE_RULES, serve_cached
from edgemart.homepage import HOME_SQL, SNAPSHOT_SQL
from edgemart.routing import by_name, starlette_routes
from edgemart.services import services_of
from edgemart.tenancy import in_tenant, tenant_of

RULE = CACHE_RULES["home"]


async def load_home(request: Request) -> Any:
    async with (
        services_of(request).reads.connection() as conn,
        in_tenant(conn, tenant_of(request.scope)),
    ):
        row = await (await conn.execute(SNAPSHOT_SQL)).fetchone()
        if row is None:
            row = await (await conn.execute(HOME_SQL.encode())).fetchone()
    return row["home"] if row else None


async def home(request: Request) -> Response:
    services = services_of(request)
    return await serve_cached(
        request, services.cache, "home", RULE, lambda: load_home(request), retry=services.retry
    )


routes = starlette_routes("home", by_name(home))
app = build_app(routes)
handler = lambda_handler(app, "home")

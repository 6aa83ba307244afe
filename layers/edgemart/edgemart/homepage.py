"""The home page document as SQL, shared by the home function (reads it) and refresh_views
(renders it into `home_snapshot` after rebuilding the lists it is built from).

`HOME_SQL` assembles the whole document in PostgreSQL, one query whatever the catalog size:
categories with counts from `category_counts` and hot / top rated / new arrivals from
`home_products`, both rebuilt per tenant by `refresh_home_lists()` (edgemart/sql). Every
statement here is the current tenant's (`current_tenant_id()`, which the caller's `in_tenant`
set): row-level security restricts the application role to it anyway, and naming it keeps a
role that bypasses row-level security (the owner) on one tenant's document too.
"""

from __future__ import annotations

from edgemart.products import product_summary, rfc3339

LIST_SIZE = 10


def _list(order_by: str) -> str:
    summary = product_summary(product="h", store_slug="h.store_slug", store_name="h.store_name")
    return f"""(SELECT coalesce(json_agg(item), '[]') FROM (
        SELECT {summary} AS item FROM home_products h
        WHERE h.tenant_id = current_tenant_id() ORDER BY {order_by} LIMIT {LIST_SIZE}
    ) ranked)"""


HOME_SQL = f"""
SELECT json_build_object(
    'categories', (SELECT coalesce(json_agg(json_build_object(
            'id', c.id, 'slug', c.slug, 'name', c.name, 'icon', c.icon, 'color', c.color,
            'product_count', c.product_count) ORDER BY c.name), '[]')
        FROM category_counts c WHERE c.tenant_id = current_tenant_id()),
    'hot', {_list("h.sold_count DESC, h.id")},
    'top_rated', {
    _list("listing_rank_score(h.quality_score) DESC, h.rating DESC NULLS LAST, h.id")
},
    'new_arrivals', {_list("h.created_at DESC, h.id DESC")},
    'generated_at', {rfc3339("now()")}
) AS home
"""

SNAPSHOT_SQL = (
    b"SELECT document AS home FROM home_snapshot WHERE tenant_id = current_tenant_id() AND id = 1"
)

STORE_SNAPSHOT_SQL = f"""
INSERT INTO home_snapshot (tenant_id, id, document, generated_at)
SELECT current_tenant_id(), 1, home, now() FROM ({HOME_SQL}) rendered
ON CONFLICT (tenant_id, id) DO UPDATE
SET document = excluded.document, generated_at = excluded.generated_at
""".encode()

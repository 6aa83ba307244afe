"""The home page document as SQL, shared by the home function (reads it) and refresh_views
(renders it into `home_snapshot` after refreshing the views it is built from).

`HOME_SQL` assembles the whole document in PostgreSQL, one query whatever the catalog size:
categories with counts from `mv_category_counts` and hot / top rated / new arrivals from
`mv_hot_products`.
"""

from __future__ import annotations

from edgemart.products import product_summary, rfc3339

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
    'top_rated', {
    _list("listing_rank_score(h.quality_score) DESC, h.rating DESC NULLS LAST, h.id")
},
    'new_arrivals', {_list("h.created_at DESC, h.id DESC")},
    'generated_at', {rfc3339("now()")}
) AS home
"""

SNAPSHOT_SQL = b"SELECT document AS home FROM home_snapshot WHERE id = 1"

STORE_SNAPSHOT_SQL = f"""
INSERT INTO home_snapshot (id, document, generated_at)
SELECT 1, home, now() FROM ({HOME_SQL}) rendered
ON CONFLICT (id) DO UPDATE SET document = excluded.document, generated_at = excluded.generated_at
""".encode()

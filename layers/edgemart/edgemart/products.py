"""The Product summary every read route returns, as SQL that builds the JSON in PostgreSQL.

Building the JSON in the database means one round trip returns a ready document and Python
only passes bytes along. The shape is the `Product` schema of /openapi.json: times as
RFC 3339 UTC with `Z`, `in_stock` from the stock count.
"""

from __future__ import annotations

from edgemart.errors import ProblemError


class ProductNotFoundError(ProblemError):
    """Unknown, unavailable or unapproved product (404 `product_not_found`)."""

    def __init__(self) -> None:
        super().__init__(404, "product_not_found", "Product not found")


def rfc3339(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def product_summary(
    *,
    product: str = "p",
    store_slug: str = "s.slug",
    store_name: str = "s.name",
    stock: str | None = None,
) -> str:
    """`json_build_object(...)` for one product row aliased `product`."""
    return f"""json_build_object(
        'id', {product}.id,
        'name', {product}.name,
        'price_cents', {product}.price_cents,
        'currency', {product}.currency,
        'store', json_build_object('slug', {store_slug}, 'name', {store_name}),
        'category_id', {product}.category_id,
        'sold_count', {product}.sold_count,
        'rating', {product}.rating,
        'quality_score', {product}.quality_score,
        'in_stock', {stock or f"{product}.stock"} > 0,
        'created_at', {rfc3339(f"{product}.created_at")}
    )"""

"""A seller's new store with one product in it, made through the HTTP API (a gateway, a serve
or the edge in front of one), for tests that need a listing of their own."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import httpx


def new_listing(
    client: httpx.Client,
    owner: Mapping[str, str],
    *,
    slug_prefix: str,
    name: str,
    price_cents: int,
    stock: int,
) -> tuple[str, str]:
    """A store `<slug_prefix>-<random>` owned by the token in `owner` (its headers), and one
    product in it: (product id, store slug)."""
    slug = f"{slug_prefix}-{uuid.uuid4().hex[:8]}"
    store = client.post("/stores", json={"slug": slug, "name": slug_prefix}, headers=owner)
    assert store.status_code == 201, store.text
    product = client.post(
        "/products",
        json={
            "store_slug": slug,
            "category_id": 1,
            "name": name,
            "price_cents": price_cents,
            "stock": stock,
        },
        headers=owner,
    )
    assert product.status_code == 201, product.text
    return str(product.json()["id"]), slug

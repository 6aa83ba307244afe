"""Products to buy and buyers with money, made in SQL, and a gateway set up for buying: what
the purchase, order, admin and live tests start from."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from edgemart.services import Services
from tests.conftest import open_gateway, settings_for
from tests.support.sql import sql
from tests.support.tokens import SECRET


@asynccontextmanager
async def gateway(url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway with the purchase tests' settings, and `overrides`."""
    settings = settings_for(
        url,
        **{
            "jwt_secret": SECRET,
            "db_pool_max_size": 20,
            "db_pool_timeout_s": 10.0,
            "idempotency_key_wait_s": 0.5,
            "rate_limit_overrides": (("purchases", 0, 60),),
            **overrides,
        },
    )
    async with open_gateway(
        Services.from_settings(settings), base_url="http://t", timeout=60
    ) as http:
        yield http


def new_product(
    url: str, *, stock: int, price: int = 1000, available: bool = True, currency: str = "USD"
) -> str:
    """A product of the first store by slug (its owner: `store_owner(url)`)."""
    rows = sql(
        url,
        "INSERT INTO products (store_id, category_id, name, price_cents, stock, is_available, "
        "currency) SELECT id, 1, 'Test item', %s, %s, %s, %s FROM stores ORDER BY slug LIMIT 1 "
        "RETURNING id::text",
        price,
        stock,
        available,
        currency,
    )
    return str(rows[0][0])


def store_owner(url: str) -> str:
    """The owner of the store new_product() lists in."""
    return str(sql(url, "SELECT owner_sub FROM stores ORDER BY slug LIMIT 1")[0][0])


def fund(url: str, sub: str, cents: int) -> None:
    sql(
        url,
        "INSERT INTO wallets (user_sub, balance_cents) VALUES (%s, %s) "
        "ON CONFLICT (tenant_id, user_sub) "
        "DO UPDATE SET balance_cents = excluded.balance_cents",
        sub,
        cents,
    )


def product_for(url: str, buyer: str, *, stock: int, price: int = 1000, funds: int = 10_000) -> str:
    """A new product, and `buyer` funded with `funds` to buy it."""
    product = new_product(url, stock=stock, price=price)
    fund(url, buyer, funds)
    return product


def one_unit_to_buy(
    url: str, buyer: str, *, stock: int, price: int = 1000, funds: int = 10_000
) -> tuple[str, str, dict[str, Any]]:
    """A new product, `buyer` funded with `funds`, and a fresh idempotency key and the body
    that buys one unit: (product, key, body)."""
    product = product_for(url, buyer, stock=stock, price=price, funds=funds)
    return product, uuid.uuid4().hex, {"product_id": product, "quantity": 1}


def failures(url: str, key: str) -> list[str]:
    return [
        r[0]
        for r in sql(
            url, "SELECT error_code FROM failed_transactions WHERE idempotency_key = %s", key
        )
    ]


def place_orders(url: str, user: str, created: list[str]) -> list[str]:
    """Orders of `user` created at the given instants (repeats make ties); their ids."""
    product = new_product(url, stock=1)
    rows = sql(
        url,
        "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
        "total_cents, status, created_at) "
        "SELECT %s, p.id, p.store_id, 1, p.price_cents, p.price_cents, 'completed', t "
        "FROM products p, unnest(%s::timestamptz[]) AS t WHERE p.id = %s RETURNING id::text",
        user,
        created,
        product,
    )
    return [row[0] for row in rows]

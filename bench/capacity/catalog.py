"""The database the capacity benchmark runs on, and what it holds for the traffic: a seeded
100k catalog (kept between runs), the products, stores and searches the requests name, the
buyers' tokens and wallets, stock enough for every purchase of a run, and the ledger that
shows no purchase oversold."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import psycopg

from bench.database import query, seeded_catalog

READ_PRODUCTS = 2_000
"""Products of the product-detail reads, and of the purchases in the traffic mixes."""
PAIRED_PRODUCTS = 10_000
"""Products the HTTP and direct purchases of the pairing go round."""
STORES = 200
"""Stores of the store-page reads."""
BUYERS = 100
"""Buyers of the HTTP purchases (the demo catalog's `buyer-1`…: the direct driver's too)."""
SEARCHES = 150
STOCK = 10_000_000
"""Stock every purchase product is given before a run: no purchase of a run can exhaust it."""
BALANCE_CENTS = 10**12
"""Every buyer's wallet before a round: no purchase of a run can exhaust it."""
LEADER_JOBS = ("refresh_views", "score_listings", "maintenance")
"""The scheduled jobs one gateway process of the fleet runs (gateway.scheduler)."""


def catalog(admin: str, size: int, *, reseed: bool = False) -> str:
    """`edgemart_bench_capacity_<size>`, created, migrated by this checkout and seeded unless
    it already holds `size` products (kept between runs); the home snapshot stored afresh and
    the idempotency keys' partitions made for today and the next two days."""
    from edgemart.homepage import STORE_SNAPSHOT_SQL

    url = seeded_catalog(admin, f"edgemart_bench_capacity_{size}", size, reseed=reseed)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(STORE_SNAPSHOT_SQL)  # what refresh_views leaves for the home function
        # The maintenance job, which never runs here (quiet_schedules), keeps the idempotency
        # keys' daily partitions ahead; a purchase on a day without one fails.
        conn.execute(
            "SELECT create_idempotency_partitions((now() AT TIME ZONE 'UTC')::date - 1, 3)"
        )
    return url


def listed_products(url: str, count: int, currency: str) -> list[str]:
    """`count` products the product route answers and a purchase can buy, the same every
    run (a fixed order of their ids); a shorter list is a prefix of a longer one."""
    rows = query(
        url,
        "SELECT p.id FROM products p JOIN stores s ON s.id = p.store_id "
        "WHERE p.is_available AND p.is_approved AND s.is_active AND p.currency = %s "
        "AND p.purchase_mode = 'direct' ORDER BY md5(p.id::text) LIMIT %s",
        [currency, count],
    )
    if len(rows) < count:
        raise RuntimeError(f"the catalog lists {len(rows):,} products, {count:,} wanted")
    return [str(row[0]) for row in rows]


def store_slugs(url: str, count: int) -> list[str]:
    rows = query(
        url, "SELECT slug FROM stores WHERE is_active ORDER BY md5(slug) LIMIT %s", [count]
    )
    return [str(row[0]) for row in rows]


def searches(count: int = SEARCHES) -> list[str]:
    """The search requests' query strings: a material and a kind of product, or the kind
    alone, from the demo catalog's words, each with a sort; fixed, so every run asks the
    same."""
    from gateway.democatalog import CATEGORIES, MATERIALS

    rng = random.Random(26)
    queries: dict[str, None] = {}
    while len(queries) < count:
        noun = rng.choice(rng.choice(CATEGORIES).nouns).split()[-1]
        words = noun if rng.random() < 0.3 else f"{rng.choice(MATERIALS)} {noun}"
        sort = rng.choice(("relevance", "relevance", "price_asc", "newest", "popular"))
        queries[urlencode({"q": words, "sort": sort})] = None
    return list(queries)


def buyers(count: int = BUYERS) -> list[str]:
    """The demo catalog's buyers, `buyer-1`…: the direct driver of bench.purchase buys as
    `buyer-<client + 1>`."""
    return [f"buyer-{number}" for number in range(1, count + 1)]


def tokens(subjects: Sequence[str], secret: str, lifetime_s: int) -> list[str]:
    """An HS256 bearer token per subject, as `edgemart token` signs them."""
    import jwt

    now = int(time.time())
    return [
        jwt.encode({"sub": subject, "iat": now, "exp": now + lifetime_s}, secret, "HS256")
        for subject in subjects
    ]


def fund(url: str, subjects: Sequence[str]) -> None:
    """Every buyer's wallet holds `BALANCE_CENTS` (created if the catalog has none)."""
    from edgemart.tenancy import DEFAULT_TENANT_ID

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wallets (tenant_id, user_sub, balance_cents) "
            "SELECT %s, subject, %s FROM unnest(%s::text[]) AS subject "
            "ON CONFLICT (tenant_id, user_sub) "
            "DO UPDATE SET balance_cents = excluded.balance_cents",
            [DEFAULT_TENANT_ID, BALANCE_CENTS, list(subjects)],
        )


def stock_up(url: str, products: Sequence[str]) -> None:
    """`STOCK` units of each purchase product."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE products SET stock = %s WHERE id = ANY(%s::uuid[]) AND stock <> %s",
            [STOCK, list(products), STOCK],
        )


def vacuum(url: str) -> None:
    """Reclaim the dead row versions earlier purchases left in products and wallets (with
    autovacuum off, as on the development server, each run would otherwise inherit them),
    as bench.purchase does before each of its runs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM products, wallets")


def quiet_schedules(url: str) -> datetime:
    """Record every leader-only job as started now, so a gateway taking the lead waits its
    whole interval (a day here) before running any; the time recorded."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO schedule_runs (name, started_at) "
            "SELECT name, now() FROM unnest(%s::text[]) AS name "
            "ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at "
            "RETURNING started_at",
            [list(LEADER_JOBS)],
        ).fetchone()
    if row is None:
        raise RuntimeError("schedule_runs returned nothing")
    started: datetime = row[0]
    return started


def jobs_started_since(url: str, since: datetime) -> list[str]:
    """The scheduled jobs that started after `since`."""
    rows = query(url, "SELECT name FROM schedule_runs WHERE started_at > %s ORDER BY name", [since])
    return [str(row[0]) for row in rows]


@dataclass(frozen=True)
class Ledger:
    """What purchases may change, at one moment."""

    units: dict[str, int]
    """Each product's stock + sold_count: no purchase changes it."""
    negative_stock: int
    sold: int
    completed_orders: int
    ordered_units: int

    @classmethod
    def read(cls, url: str) -> Ledger:
        with psycopg.connect(url) as conn:
            units = {
                str(row[0]): int(row[1])
                for row in conn.execute("SELECT id, stock + sold_count FROM products")
            }
            negative, sold = conn.execute(  # type: ignore[misc]
                "SELECT count(*) FILTER (WHERE stock < 0), coalesce(sum(sold_count), 0) "
                "FROM products"
            ).fetchone()
            orders, ordered = conn.execute(  # type: ignore[misc]
                "SELECT count(*), coalesce(sum(quantity), 0) FROM orders WHERE status = 'completed'"
            ).fetchone()
        return cls(units, int(negative), int(sold), int(orders), int(ordered))


@dataclass(frozen=True)
class Conservation:
    """Between two ledgers: what the run sold and whether anything was oversold."""

    orders: int
    units_sold: int
    units_ordered: int
    products_changed: int
    """Products whose stock + sold_count changed (must be 0)."""
    negative_stock: int

    @classmethod
    def between(cls, before: Ledger, after: Ledger) -> Conservation:
        changed = sum(
            1 for product, units in after.units.items() if before.units.get(product, units) != units
        )
        return cls(
            orders=after.completed_orders - before.completed_orders,
            units_sold=after.sold - before.sold,
            units_ordered=after.ordered_units - before.ordered_units,
            products_changed=changed,
            negative_stock=after.negative_stock,
        )

    @property
    def holds(self) -> bool:
        return (
            self.products_changed == 0
            and self.negative_stock == 0
            and self.units_sold == self.units_ordered
        )

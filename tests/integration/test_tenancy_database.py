"""Tenant isolation held by the database itself (docs/decisions/0040): connected as a member of
the application's role `edgemart_app`, a transaction sees the rows of the tenant it set and no
other's, none when it set none, and cannot write a row of another tenant; every table with a
tenant_id has row-level security enabled and forced; the application role owns nothing; and
two tenants buying at once, with colliding store slugs, the same buyer and the same
Idempotency-Keys, each keep a balanced ledger without touching the other's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from typing import Any

import psycopg
import pytest

from edgemart.counters import client_hash, search_count_entry, view_entry
from edgemart.services import Services
from edgemart.tenancy import DEFAULT_TENANT_ID
from functions.maintenance.app import maintenance
from functions.refresh_views.app import refresh_views
from functions.score_listings.app import score_listings
from gateway.democatalog import CatalogNotEmptyError, seed_catalog
from tests.conftest import settings_for, throwaway_database
from tests.support.approle import app_role

pytestmark = pytest.mark.tenancy

TENANT_A = uuid.UUID("0000000a-0000-0000-0000-00000000000a")
TENANT_B = uuid.UUID("0000000b-0000-0000-0000-00000000000b")
STOCK = 10
BUYERS = 20  # attempts per tenant: twice the stock, so half are refused
PRICE = 100
BALANCE = 100_000
SET_TENANT = "SELECT set_config('edgemart.tenant_id', %s, true)"

# Every table of the schema with a tenant_id column, partitions included, but the platform's
# directories, read before any tenant is known: tenant_domains (a request's host) and
# live_connections (a WebSocket API connection's tenant, looked up by its id on each message).
TENANT_TABLES_SQL = """
SELECT c.oid::regclass::text FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND c.relname NOT IN ('tenant_domains', 'live_connections')
ORDER BY 1
"""


def seed_tenant(conn: psycopg.Connection[Any], tenant: uuid.UUID, slug: str) -> uuid.UUID:
    """A tenant with a category, a store `shop` (the same slug in every tenant), one product
    and a funded wallet for `buyer`, its kill switches and a little of everything else;
    returns the product's id."""
    conn.execute(
        "INSERT INTO tenants (id, slug, name) VALUES (%s, %s, %s)", [tenant, slug, slug.title()]
    )
    with conn.transaction():
        conn.execute(SET_TENANT, [str(tenant)])  # the column default writes it from here
        conn.execute("INSERT INTO kill_switches (name) VALUES ('purchases'), ('listings')")
        category = conn.execute(
            "INSERT INTO categories (slug, name) VALUES ('things', 'Things') RETURNING id"
        ).fetchone()
        store = conn.execute(
            "INSERT INTO stores (slug, name, owner_sub) VALUES ('shop', 'Shop', 'seller') "
            "RETURNING id"
        ).fetchone()
        assert category is not None and store is not None
        product = conn.execute(
            "INSERT INTO products (store_id, category_id, name, price_cents, stock) "
            "VALUES (%s, %s, 'Oak lamp', %s, %s) RETURNING id",
            [store[0], category[0], PRICE, STOCK],
        ).fetchone()
        assert product is not None
        conn.execute(
            "INSERT INTO wallets (user_sub, balance_cents) VALUES ('buyer', %s)", [BALANCE]
        )
        conn.execute("INSERT INTO search_history (user_sub, query) VALUES ('buyer', 'lamp')")
        conn.execute("INSERT INTO popular_searches (query, total_count) VALUES ('lamp', 3)")
        conn.execute("INSERT INTO hidden_searches (query, hidden_by) VALUES ('spam', 'root')")
        conn.execute(
            "INSERT INTO audit_log (actor_sub, action, entity_type) VALUES ('root', 'x', 'y')"
        )
        conn.execute("INSERT INTO failed_transactions (error_code) VALUES ('seeded')")
        conn.execute(
            "INSERT INTO idempotency_keys (user_sub, key, expires_at, fingerprint, status) "
            "VALUES ('buyer', 'seeded', now() + interval '1 day', 'f', 'completed')"
        )
        conn.execute("SELECT refresh_home_lists(%s)", [tenant])
    return uuid.UUID(str(product[0]))


@contextmanager
def tenants_database(admin_url: str, template: str) -> Iterator[dict[str, Any]]:
    """A database with tenants A and B seeded alike, and a login member of edgemart_app."""
    with throwaway_database(admin_url, template=template) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            products = {
                TENANT_A: seed_tenant(conn, TENANT_A, "tenant-a"),
                TENANT_B: seed_tenant(conn, TENANT_B, "tenant-b"),
            }
        with app_role(url) as app_url:
            yield {"owner": url, "app": app_url, "products": products}


@pytest.fixture(scope="module")
def two_tenants(postgres_admin_url: str, template_database: str) -> Iterator[dict[str, Any]]:
    with tenants_database(postgres_admin_url, template_database) as tenants:
        yield tenants


@pytest.fixture
def own_tenants(postgres_admin_url: str, template_database: str) -> Iterator[dict[str, Any]]:
    """As `two_tenants`, in a database of the test's own (for tests that add orders)."""
    with tenants_database(postgres_admin_url, template_database) as tenants:
        yield tenants


def tenant_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [str(row[0]) for row in conn.execute(TENANT_TABLES_SQL)]


def test_the_tenant_tables_are_every_scoped_table(two_tenants: dict[str, Any]) -> None:
    """The catalog query the other tests walk finds the tables the design scopes."""
    tables = set(tenant_tables(two_tenants["owner"]))
    expected = {
        "categories", "stores", "products", "wallets", "orders", "payouts", "audit_log",
        "failed_transactions", "idempotency_keys", "search_history", "popular_searches",
        "popular_search_clients", "hidden_searches", "kill_switches", "home_snapshot",
        "search_terms", "category_counts", "home_products", "live_subscriptions",
    }  # fmt: skip
    assert expected <= tables
    partitions = {table for table in tables if table.startswith("idempotency_keys_")}
    assert len(partitions) >= 7 and tables - expected == partitions


def test_without_a_tenant_no_table_shows_a_row(two_tenants: dict[str, Any]) -> None:
    with psycopg.connect(two_tenants["app"], autocommit=True) as conn:
        for table in tenant_tables(two_tenants["owner"]):
            count = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            assert count == (0,), table


def test_a_tenant_sees_only_its_own_rows(two_tenants: dict[str, Any]) -> None:
    owner_counts: dict[str, int] = {}
    with psycopg.connect(two_tenants["owner"]) as owner:
        for table in tenant_tables(two_tenants["owner"]):
            row = owner.execute(
                f"SELECT count(*) FROM {table} WHERE tenant_id = %s".encode(), [TENANT_A]
            ).fetchone()
            owner_counts[table] = int(row[0]) if row else 0
    with psycopg.connect(two_tenants["app"]) as conn:
        conn.execute(SET_TENANT, [str(TENANT_A)])
        for table, expected in owner_counts.items():
            seen = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE tenant_id <> %s) FROM {table}".encode(),
                [TENANT_A],
            ).fetchone()
            assert seen == (expected, 0), table
        store = conn.execute("SELECT id FROM stores WHERE slug = 'shop'").fetchall()
    assert owner_counts["products"] == 1 and len(store) == 1  # A's shop only


@pytest.mark.parametrize("tenant_set", [None, TENANT_A])
def test_a_row_of_another_tenant_is_refused(
    two_tenants: dict[str, Any], tenant_set: uuid.UUID | None
) -> None:
    """With A set, a row naming B is refused; with none set, even the default tenant's row
    (the column default's) is refused."""
    with psycopg.connect(two_tenants["app"]) as conn:
        if tenant_set is not None:
            conn.execute(SET_TENANT, [str(tenant_set)])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO stores (tenant_id, slug, name, owner_sub) "
                "VALUES (%s, 'intruder', 'Intruder', 'x')",
                [TENANT_B if tenant_set else DEFAULT_TENANT_ID],
            )


def test_an_update_cannot_move_a_row_to_another_tenant(two_tenants: dict[str, Any]) -> None:
    with psycopg.connect(two_tenants["app"]) as conn:
        conn.execute(SET_TENANT, [str(TENANT_A)])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE wallets SET tenant_id = %s WHERE user_sub = 'buyer'", [TENANT_B])


def test_every_tenant_table_has_row_level_security_forced(two_tenants: dict[str, Any]) -> None:
    """Partitions created later included: the maintenance job's function (run here by the
    application role, as the job runs) gives a new partition the parent's policy."""
    ahead = date(2099, 1, 1)
    with psycopg.connect(two_tenants["app"], autocommit=True) as conn:
        created = conn.execute("SELECT create_idempotency_partitions(%s, 1)", [ahead]).fetchall()
    assert created == [("idempotency_keys_20990101",)]
    with psycopg.connect(two_tenants["owner"]) as conn:
        rows = conn.execute(
            "SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity, "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_class c "
            f"WHERE c.oid::regclass::text IN (SELECT * FROM ({TENANT_TABLES_SQL}) t)"
        ).fetchall()
        tables = {str(row[0]) for row in rows}
        assert "idempotency_keys_20990101" in tables
        unsecured = [row for row in rows if row[1:] != (True, True, 1)]
        assert unsecured == []
        policies = conn.execute(
            "SELECT DISTINCT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
            "FROM pg_policy"
        ).fetchall()
    setting = "(NULLIF(current_setting('edgemart.tenant_id'::text, true), ''::text))::uuid"
    assert policies == [(f"(tenant_id = {setting})", f"(tenant_id = {setting})")]


def test_the_application_role_owns_nothing(two_tenants: dict[str, Any]) -> None:
    with psycopg.connect(two_tenants["owner"]) as conn:
        owned = conn.execute(
            "SELECT 'class', relname FROM pg_class WHERE relowner = 'edgemart_app'::regrole "
            "UNION ALL SELECT 'function', proname FROM pg_proc "
            "WHERE proowner = 'edgemart_app'::regrole "
            "UNION ALL SELECT 'schema', nspname FROM pg_namespace "
            "WHERE nspowner = 'edgemart_app'::regrole "
            "UNION ALL SELECT 'type', typname FROM pg_type WHERE typowner = 'edgemart_app'::regrole"
        ).fetchall()
        login = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_roles "
            "WHERE rolname = 'edgemart_app'"
        ).fetchone()
    assert owned == []
    assert login == (False, False, False)


PURCHASE_SQL = """
SELECT status, body, replayed FROM purchase(
    %s, 'buyer', %s, 'fingerprint', %s, 1, NULL, 1000, %s,
    interval '1 day', interval '10 s', false, 'USD')
"""


def buy(app_url: str, tenant: uuid.UUID, product: uuid.UUID, key: str) -> tuple[Any, ...]:
    with psycopg.connect(app_url, autocommit=True) as conn:
        row = conn.execute(PURCHASE_SQL, [tenant, key, product, f"req-{key}"]).fetchone()
    assert row is not None
    return (tenant, key, row[0], row[1]["id"] if row[0] == 201 else row[1]["code"], row[2])


def test_two_tenants_buying_at_once_keep_their_own_ledgers(two_tenants: dict[str, Any]) -> None:
    """Both tenants' buyer is `buyer`, both stores are `shop`, and each key k-0..k-19 is sent
    twice in each tenant, all at once through purchase() as the application role: per tenant,
    one outcome per key (the duplicate replays it), exactly the stock sold, and a ledger that
    balances; across tenants, nothing shared."""
    products = two_tenants["products"]
    attempts = [
        (tenant, products[tenant], f"k-{n}")
        for n in range(BUYERS)
        for tenant in (TENANT_A, TENANT_B)
        for _ in range(2)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda a: buy(two_tenants["app"], a[0], a[1], a[2]), attempts))
    for tenant in (TENANT_A, TENANT_B):
        mine = [o for o in outcomes if o[0] == tenant]
        by_key: dict[str, set[tuple[int, str]]] = {}
        for _, key, status, result, _replayed in mine:
            by_key.setdefault(key, set()).add((status, result))
        assert all(len(results) == 1 for results in by_key.values()), by_key  # replays agree
        firsts = [next(iter(results)) for results in by_key.values()]
        assert sorted(status for status, _ in firsts) == [201] * STOCK + [409] * (BUYERS - STOCK)
        assert sum(replayed for *_, replayed in mine) == BUYERS  # each key's duplicate
    assert_ledger_balances(two_tenants["owner"], products)


def assert_ledger_balances(owner_url: str, products: dict[uuid.UUID, uuid.UUID]) -> None:
    with psycopg.connect(owner_url) as conn:
        for tenant, product in products.items():
            other = TENANT_B if tenant == TENANT_A else TENANT_A
            ledger = conn.execute(
                """
                SELECT
                  (SELECT balance_cents FROM wallets
                   WHERE tenant_id = %(t)s AND user_sub = 'buyer'),
                  (SELECT coalesce(sum(total_cents), 0) FROM orders
                   WHERE tenant_id = %(t)s AND status = 'completed'),
                  (SELECT count(*) FROM orders WHERE tenant_id = %(t)s),
                  (SELECT coalesce(sum(amount_cents + fee_cents), 0) FROM payouts
                   WHERE tenant_id = %(t)s),
                  (SELECT count(*) FROM audit_log WHERE tenant_id = %(t)s AND action = 'purchase'),
                  (SELECT count(*) FROM idempotency_keys
                   WHERE tenant_id = %(t)s AND key LIKE 'k-%%'),
                  (SELECT stock FROM products WHERE tenant_id = %(t)s AND id = %(p)s),
                  (SELECT count(*) FROM orders o JOIN products p ON p.id = o.product_id
                   WHERE o.tenant_id = %(t)s AND p.tenant_id <> o.tenant_id),
                  (SELECT count(*) FROM payouts po JOIN orders o ON o.id = po.order_id
                   WHERE po.tenant_id = %(t)s AND o.tenant_id = %(other)s)
                """,
                {"t": tenant, "p": product, "other": other},
            ).fetchone()
            assert ledger is not None
            balance, spent, orders, paid_out, audited, keys, stock, crossed, paid_across = ledger
            assert orders == STOCK and spent == STOCK * PRICE, tenant
            assert balance == BALANCE - spent and paid_out == spent, tenant
            assert audited == STOCK and keys == BUYERS and stock == 0, tenant
            assert crossed == 0 and paid_across == 0, tenant


QUEUED_SQL = """
SELECT status, body FROM purchase(
    %s, 'buyer', %s, 'fingerprint', %s, 1, NULL, 1000, 'queued',
    interval '1 day', interval '10 s', true, 'USD')
"""


def test_a_queued_order_is_applied_only_in_its_tenant(own_tenants: dict[str, Any]) -> None:
    """apply_queued_orders() given another tenant finds no such order (the worker retries the
    message, then dead-letters it); given the order's own, it settles it."""
    product = own_tenants["products"][TENANT_A]
    with psycopg.connect(own_tenants["owner"], autocommit=True) as owner:
        owner.execute("UPDATE products SET purchase_mode = 'queued' WHERE id = %s", [product])
    with psycopg.connect(own_tenants["app"], autocommit=True) as conn:
        queued = conn.execute(QUEUED_SQL, [TENANT_A, "queued-1", product]).fetchone()
        assert queued is not None and queued[0] == 202
        order = queued[1]["id"]
        apply = "SELECT order_id::text, status FROM apply_queued_orders(%s, %s, %s, 1000)"
        assert conn.execute(apply, [TENANT_B, product, [order]]).fetchall() == []
        assert conn.execute(apply, [TENANT_A, product, [order]]).fetchall() == [
            (order, "completed")
        ]


async def run_jobs_as_the_application(app_url: str) -> dict[str, dict[str, Any]]:
    """refresh_views, maintenance and score_listings on services connected as the app role,
    with a search counted and a product viewed in each tenant first."""
    services = Services.from_settings(settings_for(app_url))
    client = client_hash(None, "198.51.100.9", None)
    assert client is not None
    try:
        with psycopg.connect(app_url) as conn:
            products = {}
            for tenant in (TENANT_A, TENANT_B):
                conn.execute(SET_TENANT, [str(tenant)])
                row = conn.execute("SELECT id::text FROM products").fetchone()
                assert row is not None
                products[tenant] = row[0]
                conn.commit()
        for tenant, term in ((TENANT_A, "oak"), (TENANT_B, "brass")):
            await services.search_counts.record(search_count_entry(term, client, tenant))
            await services.view_counts.record(view_entry(products[tenant], tenant))
        return {
            "refresh_views": await refresh_views(services, {}),
            "maintenance": await maintenance(services, {}),
            "score_listings": await score_listings(services, {}),
        }
    finally:
        await services.aclose()


@pytest.mark.anyio
async def test_the_jobs_run_tenant_by_tenant_as_the_application(
    own_tenants: dict[str, Any],
) -> None:
    reports = await run_jobs_as_the_application(own_tenants["app"])
    assert reports["refresh_views"]["status"] == "refreshed", reports["refresh_views"]
    assert reports["refresh_views"]["tenants"] == 3  # default, A and B
    assert reports["refresh_views"]["product_views_flushed"] == 2
    assert reports["score_listings"]["scored"] + reports["score_listings"]["fallback"] == 2
    with psycopg.connect(own_tenants["owner"]) as conn:
        popular = conn.execute(
            "SELECT tenant_id, query FROM popular_searches WHERE query IN ('oak', 'brass') "
            "ORDER BY query"
        ).fetchall()
        views = conn.execute(
            "SELECT tenant_id, view_count FROM products ORDER BY tenant_id"
        ).fetchall()
        snapshots = conn.execute(
            "SELECT tenant_id, document -> 'hot' -> 0 ->> 'id' FROM home_snapshot "
            "WHERE tenant_id <> %s ORDER BY tenant_id",
            [DEFAULT_TENANT_ID],
        ).fetchall()
        unscored = conn.execute("SELECT count(*) FROM products WHERE quality_score IS NULL")
        left = unscored.fetchone()
    assert popular == [(TENANT_B, "brass"), (TENANT_A, "oak")]
    assert views == [(TENANT_A, 1), (TENANT_B, 1)]
    products = own_tenants["products"]
    assert snapshots == [(TENANT_A, str(products[TENANT_A])), (TENANT_B, str(products[TENANT_B]))]
    assert left == (0,)


def test_the_demo_catalog_is_not_replaced_beside_other_tenants(
    two_tenants: dict[str, Any],
) -> None:
    """Its TRUNCATE would empty every tenant's catalog: refused, nothing touched."""
    with pytest.raises(CatalogNotEmptyError, match="tenants besides the default"):
        seed_catalog(two_tenants["owner"], products=10, replace=True)
    with psycopg.connect(two_tenants["owner"]) as conn:
        assert conn.execute("SELECT count(*) FROM stores").fetchone() == (2,)

"""Migrations against a real PostgreSQL: idempotent, safe concurrently, constraints hold."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edgemart.migrate import MigrationError, apply_migrations, load_migrations


def test_apply_twice_applies_everything_once(fresh_database_url: str) -> None:
    first = apply_migrations(fresh_database_url)
    second = apply_migrations(fresh_database_url)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert second == []


def test_concurrent_runners_apply_each_migration_exactly_once(fresh_database_url: str) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: apply_migrations(fresh_database_url), range(6)))
    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in load_migrations()]
    with psycopg.connect(fresh_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(load_migrations()),)


def test_an_applied_migration_edited_later_is_refused(migrated_database_url: str) -> None:
    migrations = load_migrations()
    edited = [migrations[0].__class__(1, migrations[0].name, migrations[0].sql + "\n-- edit")]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(migrated_database_url, edited)


def test_no_transaction_migration_runs_create_index_concurrently(
    migrated_database_url: str,
) -> None:
    extra = load_migrations()[0].__class__(
        999,
        "concurrent_index",
        "-- edgemart: no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS products_view_count_idx "
        "ON products (view_count);\n",
    )
    assert apply_migrations(migrated_database_url, [*load_migrations(), extra]) == [extra]
    with psycopg.connect(migrated_database_url) as conn:
        found = conn.execute("SELECT to_regclass('products_view_count_idx')").fetchone()
    assert found == ("products_view_count_idx",)


@pytest.fixture
def catalog_row(migrated_database_url: str) -> tuple[str, str]:
    with psycopg.connect(migrated_database_url) as conn:
        category = conn.execute(
            "INSERT INTO categories (slug, name) VALUES ('c1', 'C') RETURNING id"
        ).fetchone()
        store = conn.execute(
            "INSERT INTO stores (slug, name, owner_sub) VALUES ('s-1', 'S', 'seller-1') "
            "RETURNING id"
        ).fetchone()
        assert category and store
        product = conn.execute(
            "INSERT INTO products (store_id, category_id, name, price_cents, stock) "
            "VALUES (%s, %s, 'P', 100, 1) RETURNING id",
            [store[0], category[0]],
        ).fetchone()
        assert product
    return migrated_database_url, str(product[0])


def test_stock_can_never_go_negative(catalog_row: tuple[str, str]) -> None:
    url, product_id = catalog_row
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE products SET stock = stock - 2 WHERE id = %s", [product_id])


def test_wallet_balance_can_never_go_negative(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("INSERT INTO wallets (user_sub, balance_cents) VALUES ('b', 100)")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE wallets SET balance_cents = balance_cents - 101")


def test_order_total_must_equal_price_times_quantity(catalog_row: tuple[str, str]) -> None:
    url, product_id = catalog_row
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status) SELECT 'b', id, store_id, 2, 100, 150, 'completed' "
            "FROM products WHERE id = %s",
            [product_id],
        )


def test_orders_need_an_existing_product(migrated_database_url: str) -> None:
    """The key is deferred to COMMIT (migration 0011), and enforced there."""
    with (
        psycopg.connect(migrated_database_url) as conn,
        pytest.raises(psycopg.errors.ForeignKeyViolation),
    ):
        conn.execute(
            "INSERT INTO orders (user_sub, product_id, store_id, quantity, unit_price_cents, "
            "total_cents, status) VALUES ('b', gen_random_uuid(), gen_random_uuid(), 1, 1, 1, "
            "'completed')"
        )
        conn.commit()


def test_audit_log_is_append_only(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (action, entity_type) VALUES ('x', 'y')")
        for statement in (
            "UPDATE audit_log SET action = 'z'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())


def test_idempotency_partitions_cover_today_and_the_coming_days(
    migrated_database_url: str,
) -> None:
    today = datetime.now(UTC).date()
    with psycopg.connect(migrated_database_url) as conn:
        names = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'idempotency_keys'::regclass"
            )
        }
        for offset in range(0, 7):
            assert f"idempotency_keys_{today + timedelta(days=offset):%Y%m%d}" in names
        # A row for now lands in today's partition.
        conn.execute(
            "INSERT INTO idempotency_keys (user_sub, key, expires_at, fingerprint, status) "
            "VALUES ('u', 'k', now() + interval '1 day', 'f', 'in_progress')"
        )
        partition = conn.execute("SELECT tableoid::regclass::text FROM idempotency_keys").fetchone()
    assert partition == (f"idempotency_keys_{today:%Y%m%d}",)


def test_materialized_views_refresh_concurrently(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY mv_category_counts")
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY mv_hot_products")

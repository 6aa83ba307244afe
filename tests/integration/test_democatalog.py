"""The demo catalog: deterministic, realistic enough, and refused on a non-empty catalog."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import jwt
import psycopg
import pytest

from gateway.democatalog import BUYER_BALANCE_CENTS, CatalogNotEmptyError, seed_catalog
from tests.conftest import run_cli

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
SECRET = "a-development-secret-of-at-least-32-bytes"

FINGERPRINT = """
SELECT md5(string_agg(row_text, '|' ORDER BY row_text)) FROM (
    SELECT concat_ws(',', p.id, p.name, p.description, p.price_cents, p.stock, p.sold_count,
                     p.rating, p.quality_score, p.is_available, p.created_at, s.slug,
                     s.owner_sub, c.slug) AS row_text
    FROM products p JOIN stores s ON s.id = p.store_id JOIN categories c ON c.id = p.category_id
) rows
"""


def fingerprint(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(FINGERPRINT).fetchone()
    assert row is not None
    return str(row[0])


def test_same_seed_same_catalog(
    migrated_database_url: str, postgres_admin_url: str, template_database: str
) -> None:
    from tests.conftest import create_database, drop_database

    seed_catalog(migrated_database_url, products=2000, seed=7, as_of=AS_OF)
    other = create_database(
        postgres_admin_url, "edgemart_test_seed_twin", template=template_database
    )
    try:
        seed_catalog(other, products=2000, seed=7, as_of=AS_OF)
        assert fingerprint(other) == fingerprint(migrated_database_url)
        seed_catalog(other, products=2000, seed=8, as_of=AS_OF, replace=True)
        assert fingerprint(other) != fingerprint(migrated_database_url)
    finally:
        drop_database(postgres_admin_url, "edgemart_test_seed_twin")


def test_demo_catalog_has_what_the_demo_needs(migrated_database_url: str) -> None:
    report = seed_catalog(migrated_database_url, products=5000, seed=1, as_of=AS_OF)
    assert (report.categories, report.stores, report.products) == (24, 50, 5000)
    with psycopg.connect(migrated_database_url) as conn:

        def one(sql: str, *params: object) -> object:
            row = conn.execute(sql.encode(), params or None).fetchone()
            assert row is not None
            return row[0]

        assert one("SELECT count(*) FROM categories") >= 20  # type: ignore[operator]
        sellers = "SELECT count(DISTINCT owner_sub) FROM stores WHERE owner_sub ~ '^seller-[0-9]+$'"
        assert one(sellers) == 50
        assert (
            one(
                "SELECT count(*) FROM wallets WHERE user_sub ~ '^buyer-[0-9]+$' "
                f"AND balance_cents = {BUYER_BALANCE_CENTS}"
            )
            == 100
        )
        assert one("SELECT count(DISTINCT name) FROM products") > 2000  # type: ignore[operator]
        assert one("SELECT count(DISTINCT price_cents) FROM products") > 300  # type: ignore[operator]
        assert one("SELECT count(*) FROM products WHERE stock = 0") > 0  # type: ignore[operator]
        assert one("SELECT max(sold_count) > 10 * avg(sold_count) FROM products") is True
        assert one("SELECT count(*) FROM products WHERE quality_score IS NULL") > 0  # type: ignore[operator]
        assert one("SELECT count(*) FROM products WHERE created_at > %s", AS_OF) == 0
        assert one("SELECT count(*) FROM home_products") > 0  # type: ignore[operator]
        assert one("SELECT sum(product_count) FROM category_counts") == one(
            "SELECT count(*) FROM products WHERE is_available AND is_approved"
        )
        # Full-text search works on the generated vector.
        assert (
            one(
                "SELECT count(*) FROM products "
                "WHERE search_vector @@ websearch_to_tsquery('english', 'chair')"
            )
            > 0
        )  # type: ignore[operator]


def test_seeding_a_non_empty_catalog_is_refused(migrated_database_url: str) -> None:
    seed_catalog(migrated_database_url, products=100, seed=1, as_of=AS_OF)
    with pytest.raises(CatalogNotEmptyError, match="--replace"):
        seed_catalog(migrated_database_url, products=100, seed=1, as_of=AS_OF)
    seed_catalog(migrated_database_url, products=150, seed=2, as_of=AS_OF, replace=True)
    with psycopg.connect(migrated_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (150,)


def test_seed_and_token_commands(migrated_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": migrated_database_url, "JWT_SECRET": SECRET}
    seeded = run_cli("seed", "--products", "300", "--seed", "3", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "300 products" in seeded.stdout
    minted = run_cli("token", "--sub", "alice", "--role", "admin", env=env)
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == ["admin"]
    assert claims["exp"] > claims["iat"]

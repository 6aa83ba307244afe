"""search_terms (migration 0013) stays exactly what the products say, through every write."""

from __future__ import annotations

from typing import Any

import psycopg

from gateway.democatalog import seed_catalog
from tests.conftest import DEMO_AS_OF

RECOMPUTED = """
SELECT t.*, p.tenant_id FROM products p,
    product_terms(p.id, p.search_vector, p.quality_score, p.is_available AND p.is_approved) t
"""


def drift(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(rows missing from search_terms, rows it has that the products do not explain)."""
    missing = conn.execute(
        f"SELECT count(*) FROM ({RECOMPUTED} EXCEPT ALL SELECT * FROM search_terms) d"
    ).fetchone()
    extra = conn.execute(
        f"SELECT count(*) FROM (SELECT * FROM search_terms EXCEPT ALL {RECOMPUTED}) d"
    ).fetchone()
    assert missing is not None and extra is not None
    return int(missing[0]), int(extra[0])


def terms_of(conn: psycopg.Connection[Any], product: str) -> set[str]:
    rows = conn.execute(
        "SELECT lexeme FROM search_terms WHERE product_id = %s", [product]
    ).fetchall()
    return {row[0] for row in rows}


def test_every_write_keeps_the_terms_exact(migrated_database_url: str) -> None:
    url = migrated_database_url
    seed_catalog(url, products=300, stores=4, seed=3, as_of=DEMO_AS_OF)
    with psycopg.connect(url, autocommit=True) as conn:
        assert drift(conn) == (0, 0)
        (count,) = conn.execute("SELECT count(*) FROM search_terms").fetchone()  # type: ignore[misc]
        assert count > 300  # several lexemes per listed product

        product = conn.execute(
            "INSERT INTO products (store_id, category_id, name, description, price_cents, stock) "
            "SELECT id, 1, 'Brass reading lamp', 'A lamp, a lamp, and a brass stand', 4200, 3 "
            "FROM stores LIMIT 1 RETURNING id::text"
        ).fetchone()[0]  # type: ignore[index]
        assert {"brass", "lamp", "read", "stand"} <= terms_of(conn, product)
        changes = [
            "name = 'Walnut desk'",
            "description = 'Solid walnut, two drawers'",
            "quality_score = 91",
            "quality_score = NULL",
            "is_available = false",
            "is_available = true",
            "is_approved = false",
            "is_approved = true",
            "stock = stock - 1, sold_count = sold_count + 1",  # a purchase: terms unchanged
            "price_cents = 5100",
        ]
        for change in changes:
            conn.execute(f"UPDATE products SET {change} WHERE id = %s", [product])
            assert drift(conn) == (0, 0), change
        assert "lamp" not in terms_of(conn, product) and "walnut" in terms_of(conn, product)

        conn.execute("UPDATE products SET is_available = false WHERE id = %s", [product])
        assert terms_of(conn, product) == set()  # unlisted products have no terms
        conn.execute("UPDATE products SET quality_score = 12 WHERE price_cents < 2000")
        assert drift(conn) == (0, 0)
        conn.execute(
            "DELETE FROM products WHERE id IN (SELECT id FROM products ORDER BY id LIMIT 5) "
            "AND id NOT IN (SELECT product_id FROM orders)"
        )
        assert drift(conn) == (0, 0)

    seed_catalog(url, products=40, stores=2, seed=4, as_of=DEMO_AS_OF, replace=True)
    with psycopg.connect(url) as conn:
        assert drift(conn) == (0, 0)  # TRUNCATE and a bulk COPY


def test_single_lexeme(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        cases = {
            "Lamps": "lamp",
            "Chairs": "chair",
            "oak chair": None,  # two lexemes
            "-lamp": None,  # a negation
            '"reading lamp"': None,  # a phrase
            "the": None,  # only a stop word: an empty query
        }
        for text, lexeme in cases.items():
            row = conn.execute(
                "SELECT single_lexeme(websearch_to_tsquery('english', %s))", [text]
            ).fetchone()
            assert row == (lexeme,), text
        quoted = conn.execute(
            "SELECT single_lexeme(lexeme_query(%s)), lexeme_query(%s)::text", ["o'neil\\x", "a"]
        ).fetchone()
        assert quoted == ("o'neil\\x", "'a'")

"""The PostgreSQL a benchmark runs against: DATABASE_URL (used as an admin connection to
create the benchmark's own databases), else an embedded server for the run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, LiteralString


@contextmanager
def admin_url() -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    from pgserver import get_server  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as folder:
        server = get_server(Path(folder) / "pg", cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def query(url: str, sql: LiteralString, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """The rows `sql` returns, run on a connection of its own."""
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def fresh_database(admin: str, name: str) -> str:
    """Drop `name` if it exists, create it empty and migrate it; its connection string."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from edgemart.migrate import apply_migrations

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = make_conninfo(admin, dbname=name)
    apply_migrations(url)
    return url


def seeded_catalog(admin: str, name: str, size: int, *, reseed: bool = False) -> str:
    """`name`, kept between runs: created if missing (dropped first with `reseed`), migrated by
    this checkout, and seeded with the demo catalog unless it already holds `size` products;
    its connection string."""
    import time

    import psycopg
    from psycopg.conninfo import make_conninfo

    from edgemart.migrate import apply_migrations
    from gateway.democatalog import seed_catalog

    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and reseed:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = make_conninfo(admin, dbname=name)
    apply_migrations(url)
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM products").fetchone()
    if not count or count[0] != size:
        started = time.perf_counter()
        seed_catalog(url, products=size, seed=1, replace=True)
        print(f"seeded {size:,} products in {time.perf_counter() - started:.0f} s", flush=True)
    return url

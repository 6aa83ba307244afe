"""The PostgreSQL a benchmark runs against: DATABASE_URL (used as an admin connection to
create the benchmark's own databases), else an embedded server for the run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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

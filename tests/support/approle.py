"""A LOGIN member of the application's group role `edgemart_app`, for tests that must see the
database as the application does: subject to row-level security, owning nothing (the suite's
own connections are the superuser's, which row-level security does not apply to)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo


@contextmanager
def app_role(admin_url: str) -> Iterator[str]:
    """A login role in `edgemart_app` for the block; yields `admin_url` connecting as it.
    (Trust authentication on the suite's servers: no password.)"""
    name = f"edgemart_test_app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE edgemart_app".encode())
    try:
        yield make_conninfo(admin_url, user=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [name],
            )
            conn.execute(f"DROP ROLE {name}".encode())

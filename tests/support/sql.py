"""One SQL statement on a connection of its own, for tests that set up or check rows
directly."""

from __future__ import annotations

from typing import Any

import psycopg


def sql(url: str, statement: str, *args: Any) -> Any:
    """The rows `statement` returns (None for a statement that returns none)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode(), args or None)
        return cursor.fetchall() if cursor.description else None

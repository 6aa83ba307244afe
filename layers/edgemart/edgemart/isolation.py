"""Writing a batch of independent entries so that one bad entry costs only itself.

A job writes many entries in one statement. When the database refuses the statement because
of the data (a value out of range, text it cannot store, a violated CHECK), the batch is split
in halves, each written under its own savepoint, until the refused entries stand alone; they
are dropped and the rest is written. k bad entries among n cost about `2 k log2 n` extra
statements, and none when every entry is good. Any other error (the database unavailable, a
bug) is not the entries' fault and propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import psycopg

if TYPE_CHECKING:
    from edgemart.db import Connection

T = TypeVar("T")

# Refusals caused by the values sent: SQLSTATE classes 22 (data exception) and 23 (integrity
# constraint violation), and text psycopg cannot encode (an unpaired surrogate).
ENTRY_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    UnicodeError,
)

Write = Callable[["Connection", Sequence[T]], Awaitable[None]]
Refused = Callable[[T, BaseException], None]


async def write_isolating(
    conn: Connection, entries: Sequence[T], write: Write[T], refused: Refused[T]
) -> int:
    """Write `entries` with `write` inside the caller's transaction; entries the database
    refuses are handed to `refused` and left out. Returns how many were written."""
    if not entries:
        return 0
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes only this attempt
            await write(conn, entries)
    except ENTRY_ERRORS as exc:
        if len(entries) == 1:
            refused(entries[0], exc)
            return 0
        middle = len(entries) // 2
        first = await write_isolating(conn, entries[:middle], write, refused)
        return first + await write_isolating(conn, entries[middle:], write, refused)
    return len(entries)
